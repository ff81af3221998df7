"""The REST API (contract section 4): FastAPI app factory, auth and roles, routers."""
