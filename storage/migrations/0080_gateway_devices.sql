-- Protocol gateways (GB/T 26875.3, docs/gb26875.md): the kinds a gateway
-- registers, a transmission device's address and its clock's UTC offset.

ALTER TABLE devices DROP CONSTRAINT IF EXISTS devices_kind_check;
ALTER TABLE devices ADD CONSTRAINT devices_kind_check CHECK (kind IN (
    'smoke', 'heat', 'multi', 'mcp', 'electrical', 'evac', 'uitd', 'panel', 'point'));

-- The 6-byte source address of a user information transmission device, as 12
-- upper-case hex digits, most significant first; one device per address.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS address text
    CHECK (address ~ '^[0-9A-F]{12}$');
CREATE UNIQUE INDEX IF NOT EXISTS devices_address_idx ON devices (address)
    WHERE address IS NOT NULL;

-- Offset of the device's local clock from UTC in minutes (time labels are
-- local time of the site); NULL means the protocol's usual UTC+8.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS utc_offset_min integer
    CHECK (utc_offset_min BETWEEN -720 AND 840);
