"""Protocol gateways: a device protocol on one side, the MQTT contract on the other.

They import nothing of ingest, detection or storage: to the platform a
gateway is just another device maker (docs/gb26875.md).
"""
