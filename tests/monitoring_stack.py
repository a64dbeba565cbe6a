"""A real monitoring stack for tests, on free loopback ports with temp storage: both API
instances (demo model), Nginx with stub_status, the Debian exporters (node, process,
Nginx), Alertmanager delivering to a webhook receiver run here, Prometheus, and the
canary analysis controller (gourmetgram.canary.rollout) judging both variants from that
Prometheus and serving its canary_analysis_* metrics; all configured by the same render
functions as the deploy (gourmetgram.monitoring.config) with a test profile: 1 s scrapes and
thresholds that the test traffic crosses.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from gourmetgram.canary.analysis_settings import AnalysisSettings
from gourmetgram.canary.rollout import AnalysisMetrics, Controller
from gourmetgram.host.layout import HostLayout
from gourmetgram.host.stack import StackConfig, load_stack
from gourmetgram.monitoring import config as monitoring
from tests.images import b64, encode, textured
from tests.procs import REPO_ROOT, ApiServer, Proc, child_env, free_port

# Thresholds of the test profile: every alert whose condition the test traffic can make
# true fires within seconds; "Failed requests" keeps a short `for` so pending is exercised.
TEST_THRESHOLDS = {
    "lab_group_interval": "1s",
    "failed_requests_per_second": 0.2,
    "failed_requests_for": "2s",
    "low_confidence_below": 0.99,
    "low_confidence_for": "0s",
    "instance_down_for": "0s",
    "latency_p95_seconds": 0.0001,
    "latency_p95_for": "0s",
    "server_error_ratio_above": 0,
    "server_errors_min_requests": 0,
    "server_errors_for": "0s",
    "drift_window": "1m",
    "drift_alarm_rate_factor": 0,
    "drift_min_samples": 0,
    "drift_for": "0s",
    "canary_min_requests": 0,
    "canary_error_ratio_factor": 0,
    "canary_error_ratio_margin": 0,
    "canary_latency_factor": 0,
    "canary_latency_margin_seconds": 0,
    "canary_for": "0s",
    "host_cpu_busy_above": 0,
    "host_cpu_for": "0s",
    "host_memory_available_below": 1,
    "host_memory_for": "0s",
    "host_disk_free_below": 1,
    "host_disk_for": "0s",
    "target_down_for": "0s",
    "unit_failed_for": "0s",
    "feedback_accuracy_below": 1,
    "feedback_min_labels": 0,
    "feedback_accuracy_for": "0s",
}

NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/client_body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /stub_status {{ stub_status; }}
  }}
}}
"""


class WebhookReceiver:
    """Records every Alertmanager webhook POST (the receiver a user would point
    alert_webhook_url at)."""

    def __init__(self):
        self.payloads: list[dict] = []
        received = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict]:
        return [a for p in list(self.payloads) for a in p["alerts"]]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _noise(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), "RGB")


class Traffic:
    """Keeps a trickle of requests going to both APIs so that every [1m] rate has data
    while the tests run: photo-like colour fields (the demo model answers them with
    about 0.8 confidence), low-confidence inputs (pixel noise, flat grey: about 0.5, so
    the mix averages below the lab's 0.75), `{}` (422) and bad base64 (4xx)."""

    def __init__(self, urls: list[str], web_url: str | None = None):
        self.urls, self.web_url = urls, web_url
        self.sent = 0
        self.rounds = 0
        self._stop = threading.Event()
        self.normal = [b64(encode(textured((320, 240), seed=s))) for s in range(4)]
        self.low = [b64(encode(_noise(s))) for s in range(3)]
        self.low.append(b64(encode(Image.new("RGB", (320, 240), (128, 128, 128)))))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def one_round(self):
        i, self.rounds = self.rounds % 4, self.rounds + 1
        for url in self.urls:
            for body in ({"image": self.normal[i]}, {"image": self.low[i]}, {},
                         {"image": "bad data"}):
                requests.post(url + "/predict", json=body, timeout=10)
                self.sent += 1
        if self.web_url:
            requests.get(self.web_url + "/", timeout=10)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.one_round()
            except requests.RequestException:
                pass
            self._stop.wait(0.3)

    def start(self):
        self.thread.start()

    def stop(self):
        self._stop.set()
        self.thread.join(15)


class WeightOnly:
    """The controller's actuator here: it keeps the weight in memory. This stack has no
    routing Nginx to move (tests/gourmetgram/canary/test_analysis_with_canary_library.py runs
    the controller through the real routing library), and canary_weight must stay 0
    for the inhibition test."""

    def __init__(self):
        self.value = 0

    def weight(self) -> int:
        return self.value

    def set_weight(self, weight: int, reason: str) -> None:
        self.value = weight

    def promote(self, reason: str) -> None:
        self.value = 0

    def rollback(self, reason: str) -> None:
        self.value = 0


class AnalysisController:
    """The real controller loop and its real metrics endpoint, on the stack's
    canary_analysis_port (the scrape job ``canary-analysis``), reading the stack's
    Prometheus. Low minimum counts so that the trickle of test traffic is judged
    (pass, fail or p-values) instead of held as inconclusive; a high failure threshold
    and max weight so that it keeps deciding while the tests run."""

    def __init__(self, stack: StackConfig, state_dir: Path):
        self.settings = AnalysisSettings(
            prometheus_url=f"http://127.0.0.1:{stack.prometheus_port}", interval_s=2,
            window_s=15, step_weight=1, max_weight=100, failed_checks_threshold=100,
            state_dir=state_dir, metrics_host=stack.bind_address,
            metrics_port=stack.canary_analysis_port, error_rate_min_requests=5,
            latency_min_requests=5, confidence_min_requests=5, class_mix_min_requests=5,
            drift_min_requests=5, shadow_intervals=0)
        self.metrics = AnalysisMetrics()
        self.controller = Controller(self.settings, WeightOnly(), metrics=self.metrics)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.controller.run, args=(self._stop,), daemon=True)

    def start(self) -> AnalysisController:
        self.metrics.serve(self.settings.metrics_host, self.settings.metrics_port)
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(30)
        self.metrics.close()


class MonitoringStack:
    def __init__(self, tmp: Path, model: Path):
        self.tmp = tmp
        self.model = model
        self.procs: list[Proc] = []
        self.apis: list[ApiServer] = []
        self.receiver = WebhookReceiver()
        self.traffic: Traffic | None = None
        self.controller: AnalysisController | None = None
        ports = {k: free_port() for k in (
            "web_port", "prometheus_port", "alertmanager_port", "node_exporter_port",
            "process_exporter_port", "nginx_exporter_port", "nginx_status_port",
            "canary_analysis_port", "mtail_port")}
        self.textfile_dir = tmp / "textfile"
        self.textfile_dir.mkdir()
        self.stack: StackConfig = load_stack({
            **ports,
            "api_ports": {"production": free_port(), "canary": free_port()},
            "scrape_interval": "1s",
            "alert_webhook_url": self.receiver.url,
        })
        self.prometheus_url = f"http://127.0.0.1:{self.stack.prometheus_port}"
        self.alertmanager_url = f"http://127.0.0.1:{self.stack.alertmanager_port}"

    def _proc(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(argv, self.tmp / f"{name}.log", env=child_env(**(env or {})))
        self.procs.append(p)
        return p

    def _feedback_env(self) -> dict[str, str]:
        """Every prediction sampled for review, so one label gives the accuracy series."""
        self.review_password = secrets.token_urlsafe(18)
        pw = self.tmp / "review-password"
        pw.write_text(self.review_password)
        return {"WEB_FEEDBACK_DIR": str(self.tmp / "feedback"), "WEB_REVIEW_SAMPLE_RATE": "1",
                "WEB_REVIEW_PASSWORD_FILE": str(pw)}

    def _seed_feedback(self, web_url: str) -> None:
        """A person's "wrong" and the operator's label on it (a wrong prediction: the
        estimate is 0, so the test profile's FeedbackAccuracyLow fires)."""
        auth = ("operator", self.review_password)
        answer = requests.get(web_url + "/test", headers={"Accept": "application/json"},
                              timeout=30).json()
        label = "Rice" if answer["prediction"] != "Rice" else "Soup"
        requests.post(web_url + "/feedback", timeout=10, data={
            "prediction_id": answer["prediction_id"], "verdict": "wrong", "label": label,
        }).raise_for_status()
        token = re.search(r'name="token" value="([0-9a-f]+)"',
                          requests.get(web_url + "/review", auth=auth, timeout=10).text).group(1)
        requests.post(web_url + "/review/label", auth=auth, timeout=10, data={
            "token": token, "prediction_id": answer["prediction_id"], "label": label,
        }).raise_for_status()

    # Production bootstraps its drift reference from its first predictions (the default
    # when no reference is configured); the canary loads one that build-drift-reference
    # made from generated colour fields, so the noise traffic drifts against it.
    BOOTSTRAP_SAMPLES = 80
    REFERENCE_IMAGES = 80
    DRIFT_ENV = {"FOOD11_DRIFT_ERT": "100", "FOOD11_DRIFT_CALIBRATION_STREAMS": "2000"}

    def _drift_args(self) -> dict[str, list[str]]:
        images = self.tmp / "drift-images"
        images.mkdir()
        for seed in range(self.REFERENCE_IMAGES):
            textured((160, 120), seed=100 + seed).save(images / f"{seed}.jpg")
        ref = self.tmp / "drift-reference.npz"
        build = self._proc("build-drift-reference", [
            sys.executable, "-m", "gourmetgram", "build-drift-reference", "--images", str(images),
            "--out", str(ref), "--model", str(self.model), "--device", "cpu",
            "--ert", "100", "--streams", "2000"])
        if build.popen.wait(300) != 0:
            raise RuntimeError(f"build-drift-reference failed:\n{build.log()[-3000:]}")
        return {"production": ["--drift-bootstrap-samples", str(self.BOOTSTRAP_SAMPLES)],
                "canary": ["--drift-reference", str(ref)]}

    def start(self) -> MonitoringStack:
        s, tmp = self.stack, self.tmp
        conf = tmp / "etc"
        (conf / "rules").mkdir(parents=True)
        (conf / "prometheus.yml").write_text(
            monitoring.render_prometheus_config(s, rules_dir=str(conf / "rules")))
        for name, text in monitoring.render_rules(
                s, monitoring.load_thresholds(TEST_THRESHOLDS)).items():
            (conf / "rules" / name).write_text(text)
        (conf / "alertmanager.yml").write_text(monitoring.render_alertmanager_config(s))
        (conf / "process-exporter.yml").write_text(monitoring.render_process_exporter_config(s))
        # The deploy's `gourmetgram canary` writes this file; weight 0 mutes canary alerts.
        (self.textfile_dir / "gourmetgram_canary.prom").write_text(
            "# TYPE canary_weight gauge\ncanary_weight 0\n")
        args = monitoring.daemon_args(
            s, HostLayout(textfile_dir=self.textfile_dir), config_dir=str(conf),
            prometheus_storage=str(tmp / "tsdb"),
            alertmanager_storage=str(tmp / "am"))

        api_args = self._drift_args()
        for variant, port in s.api_ports.items():
            self.apis.append(ApiServer(tmp, self.model, variant=variant, port=port,
                                       extra_args=api_args[variant], env=self.DRIFT_ENV))
        nginx_prefix = tmp / "nginx"
        nginx_prefix.mkdir()
        (nginx_prefix / "nginx.conf").write_text(
            NGINX_CONF.format(tmp=nginx_prefix, port=s.nginx_status_port))
        nginx = self._proc("nginx", ["nginx", "-p", str(nginx_prefix), "-c",
                                     str(nginx_prefix / "nginx.conf"), "-g", "daemon off;"])
        binaries = {
            "prometheus": "/usr/bin/prometheus",
            "prometheus-alertmanager": "/usr/bin/prometheus-alertmanager",
            "prometheus-node-exporter": "/usr/bin/prometheus-node-exporter",
            "prometheus-process-exporter": "/usr/bin/prometheus-process-exporter",
            "prometheus-nginx-exporter": "/usr/bin/prometheus-nginx-exporter",
        }
        daemons = {name: self._proc(name, [binaries[name], *argv]) for name, argv in args.items()}
        # mtail as nginx/mtail.default.j2 configures it, over an (idle) site access log.
        access_log = tmp / "gourmetgram-access.log"
        access_log.touch()
        daemons["mtail"] = self._proc("mtail", [
            "/usr/bin/mtail", "--progs", str(REPO_ROOT / "nginx" / "mtail"), "--logs",
            str(access_log), "--address", "127.0.0.1", "--port", str(s.mtail_port),
            "--logtostderr"])
        web = self._proc("web", [sys.executable, "-m", "gourmetgram", "serve-web",
                                 "--host", "127.0.0.1", "--port", str(s.web_port),
                                 "--api-url", self.apis[0].url, "--workers", "1",
                                 "--metrics-dir", str(tmp / "web-metrics")],
                         env=self._feedback_env())

        nginx.wait_http(f"http://127.0.0.1:{s.nginx_status_port}/stub_status")
        for name, port in (("prometheus", s.prometheus_port),
                           ("prometheus-alertmanager", s.alertmanager_port)):
            daemons[name].wait_http(f"http://127.0.0.1:{port}/-/ready")
        for name, port in (("prometheus-node-exporter", s.node_exporter_port),
                           ("prometheus-process-exporter", s.process_exporter_port),
                           ("prometheus-nginx-exporter", s.nginx_exporter_port),
                           ("mtail", s.mtail_port)):
            daemons[name].wait_http(f"http://127.0.0.1:{port}/metrics")
        for api in self.apis:
            api.wait_ready(120)
        web_url = f"http://127.0.0.1:{s.web_port}"
        web.wait_http(web_url + "/")
        self._seed_feedback(web_url)
        self.traffic = Traffic([a.url for a in self.apis], web_url)
        self.traffic.one_round()
        self.traffic.start()
        self.controller = AnalysisController(s, tmp / "canary-analysis").start()
        return self

    # Ready means: every target scraped, both variants' errors in the recording rules,
    # the exporters' series present and the lab alert evaluated past its `for`.
    WARM = (
        'count(max_over_time(up[30s]) == 1) >= count(up{job!="web"})',
        'count(variant:food11_predict_error_ratio:rate5m > 0) == 2',
        'count(variant:food11_predict_duration_seconds:p95_5m) == 2',
        'count(namedprocess_namegroup_cpu_seconds_total) > 0',
        'nginx_up == 1',
        'canary_weight',
        'ALERTS{alertname="Failed requests", alertstate="firing"}',
        'count(canary_analysis_check_p_value{job="canary-analysis"}) >= 4',
        # Production's reference is bootstrapped from its first 80 predictions.
        'count(drift_detector_state{state="armed"} == 1) == 2',
        'feedback_accuracy_upper{job="web"} < 1',
    )

    def warm_up(self, timeout: float = 150.0) -> MonitoringStack:
        deadline = time.monotonic() + timeout
        for expr in self.WARM:
            if not self.wait_for(expr, max(1.0, deadline - time.monotonic())):
                raise TimeoutError(f"monitoring stack not warm: no data for {expr}")
        return self

    def stop(self):
        if self.controller:
            self.controller.stop()
        if self.traffic:
            self.traffic.stop()
        for p in reversed(self.procs):
            p.stop()
        for api in self.apis:
            api.stop()
        self.receiver.stop()

    def query(self, expr: str) -> dict:
        """Instant query; returns Prometheus' JSON (status, data or error)."""
        r = requests.post(self.prometheus_url + "/api/v1/query", data={"query": expr}, timeout=10)
        return r.json()

    def wait_for(self, expr: str, timeout: float = 60.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            body = self.query(expr)
            if body["status"] != "success":
                raise AssertionError(f"{expr}: {body.get('error')}")
            if body["data"]["result"] or time.monotonic() > deadline:
                return body["data"]["result"]
            time.sleep(0.5)
