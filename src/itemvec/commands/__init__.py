"""CLI commands outside the core pipeline; each module defines ``register(app)``."""
