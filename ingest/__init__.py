"""MQTT intake, batch decoding, registry cache, batched writes, rejects, supervision and linkage."""
