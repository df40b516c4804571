"""MTConnect sources: an agent's HTTP REST interface and an adapter's SHDR stream.

`agent` polls an MTConnect agent (`/current`, then `/sample`), `shdr` reads the
pipe-delimited SHDR stream of an adapter over TCP, and `mapping` turns the
observations of both into canonical plantbus events.
"""
