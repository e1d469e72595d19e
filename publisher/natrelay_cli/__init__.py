"""The `natrelay` command line: `publish`, `dev`, and the admin commands `keys` and `llm`.

It installs with the publisher (no server dependencies): every command here talks to the
relay over HTTP, or runs the publisher.
"""
