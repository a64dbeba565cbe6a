"""Inventory data for every host: the one source every config is rendered from.

pyinfra loads this for all hosts; ``--data key=value`` or host data override it
(e.g. ``--data canary_weight=10``). ``gourmetgram.host.stack.StackConfig`` validates it
(unknown keys and bad values are refused before anything on the host changes).
"""

# Internal services (APIs, web, Prometheus, exporters, Grafana) listen here only.
bind_address = "127.0.0.1"
# Nginx, the one public entry point.
public_address = "0.0.0.0"
nginx_port = 80
# Host names Nginx answers to (e.g. ["gourmetgram.example.org"]); [] answers any
# well-formed name or address. Other Host headers get a 400 from Nginx's default server.
server_names = []
# Serve /api/metrics, /api/model, /api/docs, /api/openapi.json and the web app's
# /metrics through the public Nginx port too (Prometheus scrapes the bind address).
public_internal_endpoints = False

web_port = 5000
api_ports = {"production": 8000, "canary": 8001}
# gunicorn workers per API instance. On CPU a worker serves the model's ONNX export
# (160-240 MiB RSS with its 2 inference threads), so two per variant use both cores
# and keep the stack inside the lab's 4 GiB VM (docs/api.md, docs/deploy.md). A torch
# worker (CUDA, or a model whose export was refused) is about 900 MiB: 1 on small hosts.
api_workers = 2
# Intra-op threads of an API worker's forward pass while it runs alone on an idle host
# (FOOD11_SOLO_THREADS): lower latency at low load from a second ONNX Runtime session,
# about 30 MiB more per worker; 0 turns it off (docs/api.md).
api_solo_threads = 2
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
# The canary analysis controller's canary_analysis_* metrics (gourmetgram-canary-controller,
# CANARY_ANALYSIS_METRICS_PORT), scraped as job "canary-analysis"; on bind_address only.
canary_analysis_port = 9310
# mtail's metrics (Nginx's upstream tries and failures per API server, from the access
# log: the canary analysis's upstream_errors check), scraped as job "mtail".
mtail_port = 3903
# The always-on controller starts a rollout by itself when a canary is shipped; False
# leaves shipping, shifting and promoting to a person (gourmetgram canary start still works).
canary_auto_rollout = True
scrape_interval = "15s"
prometheus_retention = "15d"
# Where Alertmanager posts alerts (a webhook receiver, e.g. a chat bridge); "" keeps them
# in Alertmanager only (visible in its UI and in Grafana).
alert_webhook_url = ""
# The host has an NVIDIA GPU: scrape the nvidia-smi exporter and show GPU panels.
gpu = False
gpu_exporter_port = 9835

# --- Feedback and review (docs/feedback.md) ---
# Photos are kept when the person answers right/wrong. These also keep, for the operator's
# review at /review, a random share of all predictions and of low-confidence ones
# (confidence below feedback_low_confidence_below): 0 = off. Say so to your users.
feedback_sample_rate = 0.0
feedback_low_confidence_rate = 0.0
feedback_low_confidence_below = 0.5
# "" = SQLite under /var/lib/gourmetgram/feedback; postgresql://user@host/db (no password
# in it: use a password file or peer/cert auth) to share one store between web hosts.
feedback_db_url = ""

# On-host paths are not inventory data: gourmetgram/hostlayout.py names every one.

# --- Deploy settings (read by the deploy only, never written to the host) ---
# pip sources on the host, for mirrors or offline installs ("" / [] = PyPI).
pip_index_url = ""
pip_extra_index_urls = []
pip_find_links = []
# CA bundle pip trusts on the host (a TLS-intercepting proxy's, say); "" = pip's own.
pip_cert = ""
# "auto": the CUDA build of torch where an NVIDIA GPU is found, the CPU build elsewhere.
torch_build = "auto"
# Where the CPU build comes from; "" installs torch from the pip sources above as is.
torch_cpu_index_url = "https://download.pytorch.org/whl/cpu"
# "auto" looks for an NVIDIA PCI device; "yes" / "no" override the detection.
nvidia_gpu = "auto"
# After installing the NVIDIA driver: reboot the host (True) or ask you to (False).
reboot_for_driver = False
# Drift reference: a folder of training images on the controller, or an archive's URL
# (e.g. the lab's Food-11 download); "" turns drift detection off.
drift_reference_images = ""
# Firewall: leave only Nginx and SSH open to the world.
firewall = False
# Grafana OSS from Grafana's APT repository.
install_grafana = True
# Roles the deploy applies, e.g. --data roles=nginx to re-apply only the Nginx site.
roles = ["gpu", "install", "systemd", "nginx", "prometheus", "grafana", "firewall"]
# Keys the deploy may overwrite although a command on the host changed them since the
# last deploy (e.g. --data overwrite_host=canary_weight); see docs/deploy.md, "Host state".
overwrite_host = []
