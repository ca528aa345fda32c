"""GET /me: who the calling key is, what it may do, and its rate-limit headroom."""
