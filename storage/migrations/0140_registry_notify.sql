-- Every change of the registry, whatever made it (the API, a script, an admin
-- in psql), wakes ingest at once: it LISTENs on this channel and refreshes its
-- registry, so a new site's topics are subscribed within milliseconds instead
-- of at its next poll (MQTT drops what nobody is subscribed to).
CREATE FUNCTION firesafe_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('firesafe_devices', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER devices_registry_changed AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION firesafe_registry_changed();
