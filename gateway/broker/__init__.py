"""The event log every worker shares: the `Broker` contract (`base`), its two implementations (`memory`,
`redis`), `broker_from_url` (`factory`) and the continuity rule (`continuity`).

Nothing is imported here, so that `gateway.broker.continuity` (pure) loads without Redis: the remote client
imports it.
"""
