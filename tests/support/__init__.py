"""Support for the tests: API helpers and real loopback servers (image host, SMTP, uvicorn)."""
