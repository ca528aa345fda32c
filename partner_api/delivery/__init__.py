"""The delivery domain: what an event becomes, from publish to a receiver's 2xx or a dead
letter. Used by the API, the admin CLI and the dispatcher; imports nothing from the web layer.

- `lifecycle`: every state change of a delivery or a subscription's delivery state, and the
  list of what can happen to a delivery.
- `outbox` (publish_event), `event_types` (the catalogue), `subscriptions` (create, find,
  delete, enable, disable, test ping, failure audit).
- `claims` (which due deliveries a dispatcher takes), `shares` (the sharing rules), `retry`
  (the schedule), `outcomes` (how an attempt can end).
- `envelope` (the body), `signing` (the signature headers), `webhook_url`, `ssrf` and `dns`
  (where a webhook may point, checked at create and at delivery).
- `replay`, `retention`, `history` and `stats`: the operator's tools.
"""
