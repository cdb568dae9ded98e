"""Subcommands of ``mmfree``; each module defines ``register(subparsers)``."""
