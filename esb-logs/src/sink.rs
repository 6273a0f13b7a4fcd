//! Where function log lines go: the [`LogSink`] trait and the sinks that only route lines.

use std::sync::Arc;

use crate::line::LogLine;

/// Receives function log lines. Must not block: it is called from the reader of the sandbox's output.
pub trait LogSink: Send + Sync + 'static {
    /// Takes one line.
    fn log(&self, line: LogLine);
}

/// Drops every line.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullLogSink;

impl LogSink for NullLogSink {
    fn log(&self, _line: LogLine) {}
}

/// Sends each line to several sinks.
pub struct FanOut(pub Vec<Arc<dyn LogSink>>);

impl LogSink for FanOut {
    fn log(&self, line: LogLine) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.log(line.clone());
            }
            last.log(line);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;
    use crate::LogStream;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl LogSink for Collect {
        fn log(&self, line: LogLine) {
            self.0.lock().unwrap().push(line.message);
        }
    }

    fn line(message: &str) -> LogLine {
        LogLine {
            time: SystemTime::now(),
            function_name: "f".into(),
            sandbox_id: "sb".into(),
            request_id: None,
            trace_id: None,
            stream: LogStream::Stdout,
            message: message.into(),
        }
    }

    #[test]
    fn fan_out_gives_every_sink_each_line() {
        let a = Arc::new(Collect::default());
        let b = Arc::new(Collect::default());
        let fan_out = FanOut(vec![a.clone(), Arc::new(NullLogSink), b.clone()]);
        fan_out.log(line("one"));
        fan_out.log(line("two"));
        assert_eq!(*a.0.lock().unwrap(), ["one", "two"]);
        assert_eq!(*b.0.lock().unwrap(), ["one", "two"]);
        FanOut(Vec::new()).log(line("nowhere"));
    }
}
