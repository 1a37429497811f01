"""server/: the OpenAI-compatible HTTP server over one LLMEngine.

`app.build_app(engine, ServerConfig(...))` returns the FastAPI app;
`cli_serve` is `jenga serve`.  One background thread (`async_engine`) owns
the engine; HTTP handlers only validate, tokenize and wait for outputs.
See docs/server.md.  Nothing here is imported by the rest of the package.
"""
