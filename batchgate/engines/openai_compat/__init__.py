"""The `openai_compat` engine: any OpenAI-compatible upstream over HTTP."""
