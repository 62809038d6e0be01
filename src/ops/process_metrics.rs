//! Gauges about the processes themselves: two always on (how many are under pressure, how many
//! were given up on), and per-process series, opt-in and capped, labelled source, namespace and
//! name.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sync::lock;

/// What the gauges say of one process, as the daemon last observed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessGauges {
    pub namespace: String,
    pub name: String,
    pub up: bool,
    /// `None` without a readiness probe.
    pub ready: Option<bool>,
    pub restarts: u32,
    pub exit_code: i32,
    /// Resident bytes and CPU percent at the last sample, when there was a reading.
    pub usage: Option<(i64, f64)>,
    /// The resources it is over a threshold of (`memory`, `cpu`).
    pub under_pressure: Vec<&'static str>,
    /// process-compose will not restart it again.
    pub given_up: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ProcessLabels {
    pub source: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ProcessResourceLabels {
    pub source: String,
    pub namespace: String,
    pub name: String,
    pub resource: String,
}

/// The resources a threshold can be set on, as labelled.
const RESOURCES: [&str; 2] = ["memory", "cpu"];

/// The per-process and the always-on process gauges.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    under_pressure: Family<ResourceLabel, Gauge>,
    given_up: Gauge,
    up: Family<ProcessLabels, Gauge>,
    ready: Family<ProcessLabels, Gauge>,
    restarts: Family<ProcessLabels, Gauge>,
    exit_code: Family<ProcessLabels, Gauge>,
    memory_bytes: Family<ProcessLabels, Gauge>,
    cpu_percent: Family<ProcessLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    process_under_pressure: Family<ProcessResourceLabels, Gauge>,
    series_omitted: Gauge,
    /// The processes that have series now, to remove those that no longer should.
    exported: Mutex<BTreeSet<ProcessLabels>>,
}

/// Which processes get series: all of them, or none, or the first `limit` by namespace and
/// name (a stable choice, so that a series does not come and go as others do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesPolicy {
    pub enabled: bool,
    pub limit: usize,
}

impl ProcessMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "processes_under_pressure",
            "Processes over a configured resource threshold for its duration, by resource",
            self.under_pressure.clone(),
        );
        registry.register(
            "processes_given_up",
            "Processes process-compose will not restart again (given_up, not running since)",
            self.given_up.clone(),
        );
        registry.register(
            "process_up",
            "1 while the process runs (health.process_metrics)",
            self.up.clone(),
        );
        registry.register(
            "process_ready",
            "1 while its readiness probe passes, 0 otherwise; only for processes with a probe",
            self.ready.clone(),
        );
        registry.register(
            "process_restarts",
            "process-compose's restart count (a manual or file-watch restart may reset it)",
            self.restarts.clone(),
        );
        registry.register(
            "process_exit_code",
            "The last exit code process-compose reported",
            self.exit_code.clone(),
        );
        registry.register(
            "process_memory_bytes",
            "Resident memory at the last sample",
            self.memory_bytes.clone(),
        );
        registry.register(
            "process_cpu_percent",
            "CPU use at the last sample, percent of one core",
            self.cpu_percent.clone(),
        );
        registry.register(
            "process_under_pressure",
            "1 while the process is over a resource threshold",
            self.process_under_pressure.clone(),
        );
        registry.register(
            "process_series_omitted",
            "Processes without per-process series because of health.process_metrics_limit",
            self.series_omitted.clone(),
        );
    }

    /// Sets every gauge from `processes`, the whole set the daemon knows of `source`.
    pub fn update(&self, source: &str, processes: &[ProcessGauges], policy: SeriesPolicy) {
        for resource in RESOURCES {
            let count = processes
                .iter()
                .filter(|p| p.under_pressure.contains(&resource))
                .count();
            self.under_pressure
                .get_or_create(&ResourceLabel {
                    resource: resource.to_owned(),
                })
                .set(count as i64);
        }
        self.given_up
            .set(processes.iter().filter(|p| p.given_up).count() as i64);

        let mut chosen: Vec<&ProcessGauges> = if policy.enabled {
            processes.iter().collect()
        } else {
            Vec::new()
        };
        chosen.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let omitted = chosen.len().saturating_sub(policy.limit);
        chosen.truncate(policy.limit);
        self.series_omitted.set(omitted as i64);

        let mut exported = lock(&self.exported);
        let now: BTreeSet<ProcessLabels> = chosen
            .iter()
            .map(|p| ProcessLabels {
                source: source.to_owned(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
            .collect();
        for gone in exported.difference(&now) {
            self.remove(gone);
        }
        for (labels, process) in now.iter().zip(&chosen) {
            self.set(labels, process);
        }
        *exported = now;
    }

    fn set(&self, labels: &ProcessLabels, p: &ProcessGauges) {
        self.up.get_or_create(labels).set(i64::from(p.up));
        match p.ready {
            Some(ready) => {
                self.ready.get_or_create(labels).set(i64::from(ready));
            }
            None => {
                self.ready.remove(labels);
            }
        }
        self.restarts
            .get_or_create(labels)
            .set(i64::from(p.restarts));
        self.exit_code
            .get_or_create(labels)
            .set(i64::from(p.exit_code));
        match p.usage {
            Some((mem, cpu)) => {
                self.memory_bytes.get_or_create(labels).set(mem);
                self.cpu_percent.get_or_create(labels).set(cpu);
            }
            None => {
                self.memory_bytes.remove(labels);
                self.cpu_percent.remove(labels);
            }
        }
        for resource in RESOURCES {
            let labels = resource_labels(labels, resource);
            if p.under_pressure.contains(&resource) {
                self.process_under_pressure.get_or_create(&labels).set(1);
            } else {
                self.process_under_pressure.remove(&labels);
            }
        }
    }

    fn remove(&self, labels: &ProcessLabels) {
        self.up.remove(labels);
        self.ready.remove(labels);
        self.restarts.remove(labels);
        self.exit_code.remove(labels);
        self.memory_bytes.remove(labels);
        self.cpu_percent.remove(labels);
        for resource in RESOURCES {
            self.process_under_pressure
                .remove(&resource_labels(labels, resource));
        }
    }
}

fn resource_labels(labels: &ProcessLabels, resource: &str) -> ProcessResourceLabels {
    ProcessResourceLabels {
        source: labels.source.clone(),
        namespace: labels.namespace.clone(),
        name: labels.name.clone(),
        resource: resource.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(name: &str) -> ProcessGauges {
        ProcessGauges {
            namespace: "default".into(),
            name: name.into(),
            up: true,
            ready: None,
            restarts: 2,
            exit_code: 0,
            usage: Some((1024, 1.5)),
            under_pressure: Vec::new(),
            given_up: false,
        }
    }

    fn text(metrics: &ProcessMetrics) -> String {
        let mut registry = Registry::with_prefix("pc_eventd");
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    const ON: SeriesPolicy = SeriesPolicy {
        enabled: true,
        limit: 2,
    };

    #[test]
    fn per_process_series_are_capped_and_follow_the_processes() {
        let metrics = ProcessMetrics::default();
        let mut web = process("web");
        web.ready = Some(true);
        web.under_pressure = vec!["memory"];
        metrics.update("pc", &[process("db"), web.clone(), process("api")], ON);
        let out = text(&metrics);
        let labels = |name: &str| format!("source=\"pc\",namespace=\"default\",name=\"{name}\"");
        assert!(
            out.contains(&format!("pc_eventd_process_up{{{}}} 1", labels("api"))),
            "{out}"
        );
        assert!(out.contains(&format!("pc_eventd_process_restarts{{{}}} 2", labels("db"))));
        assert!(
            !out.contains(&labels("web")),
            "the cap keeps the first two by name: {out}"
        );
        assert!(out.contains("pc_eventd_process_series_omitted 1"));
        assert!(out.contains("pc_eventd_processes_under_pressure{resource=\"memory\"} 1"));
        assert!(out.contains("pc_eventd_processes_under_pressure{resource=\"cpu\"} 0"));

        // api goes away: web takes its place, with readiness and pressure
        metrics.update("pc", &[process("db"), web], ON);
        let out = text(&metrics);
        assert!(!out.contains(&labels("api")), "{out}");
        assert!(out.contains(&format!("pc_eventd_process_ready{{{}}} 1", labels("web"))));
        assert!(out.contains(&format!(
            "pc_eventd_process_under_pressure{{{},resource=\"memory\"}} 1",
            labels("web")
        )));
        assert!(out.contains(&format!(
            "pc_eventd_process_memory_bytes{{{}}} 1024",
            labels("web")
        )));
        assert!(out.contains(&format!(
            "pc_eventd_process_cpu_percent{{{}}} 1.5",
            labels("web")
        )));
        assert!(out.contains("pc_eventd_process_series_omitted 0"));
        assert!(
            !out.contains(&format!("pc_eventd_process_ready{{{}}}", labels("db"))),
            "no probe, no readiness series"
        );
    }

    #[test]
    fn off_exports_only_the_counts() {
        let metrics = ProcessMetrics::default();
        let mut gone = process("batch");
        gone.given_up = true;
        gone.up = false;
        metrics.update(
            "pc",
            &[gone, process("web")],
            SeriesPolicy {
                enabled: false,
                limit: 500,
            },
        );
        let out = text(&metrics);
        assert!(!out.contains("name=\""), "{out}");
        assert!(out.contains("pc_eventd_processes_given_up 1"));
        assert!(out.contains("pc_eventd_process_series_omitted 0"));
    }
}
