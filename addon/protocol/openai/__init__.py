"""Wire models of the OpenAI requests clients send: Chat Completions, Responses, legacy
Completions, and what they share (`common`)."""
