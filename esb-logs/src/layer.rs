//! A `tracing` layer that ships a service's own events.

use std::borrow::Cow;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::{JOB_SERVICES, Level, LogShipper, Record};

/// Targets never shipped: the shipper's own events and those of its HTTP client, which
/// would otherwise feed back into the queue they report on.
pub const SKIPPED_TARGETS: &[&str] = &["esb_logs", "reqwest", "hyper", "hyper_util", "h2"];

/// Ships each `tracing` event as a record (`job=services`), with the request id, trace id,
/// function and sandbox found on the event or its spans.
///
/// Recognized field names: `request_id` or `aws_request_id`; `trace_id`; `function` or
/// `function_name`; `sandbox_id` or `sandbox`. The event's other fields go as fields, and
/// its target as `target`. Combine with a filter (`Layer::with_filter`) to choose levels.
#[derive(Clone, Debug)]
pub struct ShipperLayer {
    shipper: LogShipper,
    container_name: String,
}

impl ShipperLayer {
    /// A layer shipping to `shipper` as `container_name` (`esb-gateway`, `esb-agent`).
    pub fn new(shipper: LogShipper, container_name: impl Into<String>) -> Self {
        Self {
            shipper,
            container_name: container_name.into(),
        }
    }
}

/// The invocation fields of a span or an event.
#[derive(Clone, Debug, Default)]
struct Ids {
    request_id: Option<String>,
    trace_id: Option<String>,
    function_name: Option<String>,
    sandbox_id: Option<String>,
}

impl Ids {
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        match name {
            "request_id" | "aws_request_id" => Some(&mut self.request_id),
            "trace_id" => Some(&mut self.trace_id),
            "function" | "function_name" => Some(&mut self.function_name),
            "sandbox_id" | "sandbox" => Some(&mut self.sandbox_id),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.request_id.is_none()
            && self.trace_id.is_none()
            && self.function_name.is_none()
            && self.sandbox_id.is_none()
    }

    /// Fills what is still unknown from `outer`.
    fn inherit(&mut self, outer: &Ids) {
        for (mine, theirs) in [
            (&mut self.request_id, &outer.request_id),
            (&mut self.trace_id, &outer.trace_id),
            (&mut self.function_name, &outer.function_name),
            (&mut self.sandbox_id, &outer.sandbox_id),
        ] {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }
}

impl Visit for Ids {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(slot) = self.slot(field.name()) {
            *slot = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(slot) = self.slot(field.name()) {
            *slot = Some(format!("{value:?}"));
        }
    }
}

/// Collects an event: its message, invocation fields and other fields.
#[derive(Default)]
struct EventFields {
    message: String,
    ids: Ids,
    fields: Vec<(Cow<'static, str>, String)>,
}

impl EventFields {
    fn put(&mut self, field: &Field, value: String) {
        let name = field.name();
        if name == "message" {
            self.message = value;
        } else if let Some(slot) = self.ids.slot(name) {
            *slot = Some(value);
        } else {
            self.fields.push((Cow::Borrowed(name), value));
        }
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for ShipperLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut ids = Ids::default();
        attrs.record(&mut ids);
        if !ids.is_empty()
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(ids) = extensions.get_mut::<Ids>() {
            values.record(ids);
        } else {
            let mut ids = Ids::default();
            values.record(&mut ids);
            if !ids.is_empty() {
                extensions.insert(ids);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let target = metadata.target();
        if SKIPPED_TARGETS.iter().any(|skipped| {
            target
                .strip_prefix(skipped)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        }) {
            return;
        }
        let mut collected = EventFields::default();
        event.record(&mut collected);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(ids) = span.extensions().get::<Ids>() {
                    collected.ids.inherit(ids);
                }
            }
        }
        let EventFields {
            message,
            ids,
            mut fields,
        } = collected;
        fields.push((Cow::Borrowed("target"), target.to_owned()));
        self.shipper.push(Record {
            time: std::time::SystemTime::now(),
            level: Level::from(*metadata.level()),
            level_name: None,
            message,
            container_name: self.container_name.clone(),
            job: Cow::Borrowed(JOB_SERVICES),
            function_name: ids.function_name,
            sandbox_id: ids.sandbox_id,
            aws_request_id: ids.request_id,
            trace_id: ids.trace_id,
            fields,
        });
    }
}
