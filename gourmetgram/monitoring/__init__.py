"""Monitoring as code: Prometheus, rules, Alertmanager, exporters and Grafana's files
rendered from the stack data, and the dashboards generated from Python."""
