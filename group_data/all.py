"""Inventory data for every host: the one source every config is rendered from.

pyinfra loads this for all hosts; ``--data key=value`` or host data override it
(e.g. ``--data canary_weight=10``). ``gourmetgram.stack.StackConfig`` validates it
(unknown keys and bad values are refused before anything on the host changes).
"""

# Internal services (APIs, web, Prometheus, exporters, Grafana) listen here only.
bind_address = "127.0.0.1"
# Nginx, the one public entry point.
public_address = "0.0.0.0"
nginx_port = 80

web_port = 5000
api_ports = {"production": 8000, "canary": 8001}
api_workers = 2
# Where the APIs run the model: "auto" (CUDA where present), "cpu" (also hides every
# device from the API unit) or "cuda".
api_device = "auto"

# Model file per variant on the controller; "" means the demo model.
models = {
    "production": {"path": "", "version": ""},
    "canary": {"path": "", "version": ""},
}
# Percent of /api/ traffic sent to the canary (0..100).
canary_weight = 0
# Pin each browser to the variant that first served it (cookie-based split).
sticky_canary = False
# Largest request body the API and Nginx accept, bytes.
max_body_bytes = 8 * 1024 * 1024

prometheus_port = 9090
alertmanager_port = 9093
node_exporter_port = 9100
process_exporter_port = 9256
nginx_exporter_port = 9113
# Nginx's stub_status (for the nginx exporter), on bind_address only.
nginx_status_port = 8088
# Nginx's read/send timeout towards the model API, seconds (a cold prediction is < 1 s).
api_timeout_seconds = 30
grafana_port = 3000
scrape_interval = "15s"
prometheus_retention = "15d"
# Where Alertmanager posts alerts; "" keeps them in Alertmanager only.
alert_webhook_url = ""
