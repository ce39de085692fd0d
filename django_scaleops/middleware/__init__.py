"""Old paths of the middleware, which now live with their capabilities (each warns)."""
