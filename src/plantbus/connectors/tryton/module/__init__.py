"""Tryton module `plantbus`: every posting carries the id of the event behind it.

The module adds one field, `plantbus_event`, to the four records that the
plantbus sink creates or finishes: `stock.move` (consumption and output),
`production.work.cycle` (progress on an operation), `production` (the
completion of a work order) and `stock.shipment.in` (a supplier's ASN). The
field contains the CloudEvents id of the event that caused the posting,
unique wherever it is set.

Why a field of its own and not a standard one: Tryton has no idempotency key on
its RPC calls. The free-text fields that could hold an event id (`reference` on
moves and productions, `origin` references) are shared with users and other
modules, have no unique constraint, and on a production `reference` already
holds the customer's order reference. With a dedicated field:

* the sink looks a posting up by event id before it creates anything, so a
  redelivered event returns the existing reference and changes nothing;
* two deliveries of the same event that race each other cannot both post,
  because the database rejects the second insert with the constraint below and
  the sink then returns the reference of the first one;
* anyone reading Tryton can trace a move or cycle back to the event in the log.

The module also exposes a few workflow steps over RPC, each one transaction and
a no-op for records already past the step, so that deliveries racing each
other cannot fail half way. Tryton's own buttons check the state a user sees
and reject a second press:

* `production.plantbus_release`: create productions from BOM and routing and
  release them (the desktop client explodes a BOM through on_change calls,
  which a script cannot easily repeat); used by the simulator and the tests;
* `production.plantbus_run`: wait, cancel the planned inputs that no event
  posted, assign and run;
* `production.plantbus_do`, `stock.move.plantbus_do`: do what is not done yet,
  and `stock.move.plantbus_cancel`: cancel what is still open
  (the move's `do` button rejects draft moves that need an assignation);
* `production.work.cycle.plantbus_finish`: run a cycle, set its duration, do.

Tryton 8.2 registers the classes from the `[register]` section of tryton.cfg;
a `register()` function is deprecated there, so this package has none.
"""
