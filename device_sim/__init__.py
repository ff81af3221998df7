"""The device simulator and the contract conformance check for device makers.

It speaks only the public contract (docs/contract.md) and shares no code
with ingest: a mismatch between the two must show up as a failing test, not be
hidden by a common decoder.

- `estate.generate_estate` - a seeded, realistic estate of sites and devices;
- `timeline.simulate` - the messages those devices publish (event time) and
  the ground-truth labels of the injected scenarios, with no I/O;
- `publisher` - sends a simulation over MQTT, paced or as fast as possible;
- `conformance` - judges a real device's traffic against the contract.
"""
