"""The dashboards grafana/build_dashboards.py writes, one module each.

kit.py holds the helpers (and the language being rendered, the SQL
conventions); overview.py, site.py, device.py, electrical.py, evacuation.py
and platform.py each build one dashboard from them.
"""
