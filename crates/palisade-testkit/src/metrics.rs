//! [`MetricsCapture`]: a `metrics` recorder that keeps what it is given, so tests can assert counter values and
//! histogram records by name and labels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// One histogram value: the metric's name, its labels in the order given, and the value.
pub type HistogramRecord = (String, Vec<(String, String)>, f64);

#[derive(Default)]
struct Kept {
    /// `name{label=value,...}` (labels in the order given) → total.
    counters: BTreeMap<String, u64>,
    histograms: Vec<HistogramRecord>,
}

/// A recorder for one test: install it with `metrics::with_local_recorder(&capture, ..)` or
/// `metrics::set_default_local_recorder(&capture)`, then read [`counter`](Self::counter) or
/// [`histograms`](Self::histograms). Gauges are ignored.
///
/// ```
/// let capture = palisade_testkit::MetricsCapture::default();
/// metrics::with_local_recorder(&capture, || metrics::counter!("calls_total", "result" => "ok").increment(2));
/// assert_eq!(capture.counter("calls_total{result=ok}"), 2);
/// ```
#[derive(Clone, Default)]
pub struct MetricsCapture(Arc<Mutex<Kept>>);

impl MetricsCapture {
    /// A counter's total, by `name{label=value,...}` (labels in the order the code gives them; `name{}` when it
    /// has none); 0 when it was never registered.
    #[must_use]
    pub fn counter(&self, key: &str) -> u64 {
        self.kept(|k| k.counters.get(key).copied().unwrap_or(0))
    }

    /// Every counter seen, for failure messages.
    #[must_use]
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.kept(|k| k.counters.clone())
    }

    /// Every histogram value recorded, in order.
    #[must_use]
    pub fn histograms(&self) -> Vec<HistogramRecord> {
        self.kept(|k| k.histograms.clone())
    }

    fn kept<R>(&self, f: impl FnOnce(&mut Kept) -> R) -> R {
        // A panicking test thread may poison the lock; what it kept is still worth reading.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

struct One(Key, MetricsCapture);

impl One {
    fn name(&self) -> String {
        let labels: Vec<String> = self.0.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        format!("{}{{{}}}", self.0.name(), labels.join(","))
    }
}

impl CounterFn for One {
    fn increment(&self, value: u64) {
        let name = self.name();
        self.1.kept(|k| *k.counters.entry(name).or_default() += value);
    }
    fn absolute(&self, value: u64) {
        let name = self.name();
        self.1.kept(|k| k.counters.insert(name, value));
    }
}

impl HistogramFn for One {
    fn record(&self, value: f64) {
        let labels = self.0.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        let name = self.0.name().to_owned();
        self.1.kept(|k| k.histograms.push((name, labels, value)));
    }
}

impl Recorder for MetricsCapture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(One(key.clone(), self.clone())))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(One(key.clone(), self.clone())))
    }
}
