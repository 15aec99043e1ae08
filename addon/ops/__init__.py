"""What operators see and run: the story of a request (comment, mark, log line), Prometheus
metrics, secret redaction, and the `scripts/login` sign-in."""
