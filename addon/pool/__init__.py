"""The account pool: the accounts file (schema), the pool at run time (who answers next, who
rests), the retry policy, Google credential files, the state file, the start-up model check."""
