"""The benchmark's own server configuration: the product plus a bare endpoint, never shipped."""
