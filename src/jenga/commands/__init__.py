"""Implementations of the `jenga` subcommands that have no other home."""
