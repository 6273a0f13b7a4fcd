//! Request ids and X-Ray trace headers.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use esb_runtime::InvokeRequest;
use http::HeaderMap;
use http::header::HeaderValue;

/// The `X-Amzn-Trace-Id` header.
pub const TRACE_HEADER: &str = "x-amzn-trace-id";
/// The `x-amzn-RequestId` header.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// The ids of one request: its own and its trace's.
#[derive(Clone, Debug)]
pub(crate) struct RequestIds {
    /// A fresh UUID: `x-amzn-RequestId`, `requestContext.requestId` and the Lambda request id.
    pub request_id: String,
    /// The caller's `X-Amzn-Trace-Id`, or a new `Root=1-<epoch>-<random>`.
    pub trace: HeaderValue,
}

impl RequestIds {
    pub fn new(headers: &HeaderMap) -> Self {
        let trace = headers
            .get(TRACE_HEADER)
            .filter(|v| !v.is_empty() && v.to_str().is_ok())
            .cloned()
            .unwrap_or_else(new_trace_id);
        Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            trace,
        }
    }

    /// An invocation carrying this request's ids; the function's trace header is
    /// [`function_trace`] of the request's.
    pub fn invoke_request(&self, payload: Bytes) -> InvokeRequest {
        InvokeRequest {
            request_id: self.request_id.clone(),
            payload,
            trace_id: self.trace.to_str().ok().map(function_trace),
            ..InvokeRequest::default()
        }
    }

    /// Both headers, to set on the response.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            request_id: HeaderValue::from_str(&self.request_id).ok(),
            trace: self.trace.clone(),
        }
    }
}

/// The id headers of one response.
#[derive(Clone, Debug)]
pub(crate) struct Stamp {
    request_id: Option<HeaderValue>,
    trace: HeaderValue,
}

impl Stamp {
    /// Sets both headers.
    pub fn apply(self, headers: &mut HeaderMap) {
        if let Some(id) = self.request_id {
            headers.insert(REQUEST_ID_HEADER, id);
        }
        headers.insert(TRACE_HEADER, self.trace);
    }
}

/// The trace header a function gets (`Lambda-Runtime-Trace-Id`), as Lambda writes it:
/// the request's `Root`, a new `Parent` (the function's segment, child of the caller's), and
/// the caller's sampling decision, `Sampled=0` when it made none.
pub(crate) fn function_trace(header: &str) -> String {
    let field = |name: &str| {
        header
            .split(';')
            .find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('='))
    };
    let parent: String = uuid::Uuid::new_v4().as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sampled = match field("Sampled") {
        Some("1") => "1",
        _ => "0",
    };
    match field("Root") {
        Some(root) => format!("Root={root};Parent={parent};Sampled={sampled}"),
        // Not an X-Ray header: passed on as it came.
        None => header.to_owned(),
    }
}

/// `Root=1-<8 hex digits of the epoch second>-<24 random hex digits>`, as X-Ray writes it.
fn new_trace_id() -> HeaderValue {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let random = uuid::Uuid::new_v4();
    let hex: String = random.as_bytes()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let value = format!("Root=1-{:08x}-{hex}", epoch & 0xffff_ffff);
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("Root=1-00000000-000000000000000000000000"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_new_trace_id_has_the_xray_shape() {
        let ids = RequestIds::new(&HeaderMap::new());
        let trace = ids.trace.to_str().unwrap();
        let parts: Vec<&str> = trace.strip_prefix("Root=").unwrap().split('-').collect();
        assert_eq!(parts.len(), 3, "{trace}");
        assert_eq!(parts[0], "1");
        assert_eq!(parts[1].len(), 8);
        assert_eq!(parts[2].len(), 24);
        assert!(
            parts[1..]
                .iter()
                .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn a_callers_trace_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACE_HEADER,
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
                .parse()
                .unwrap(),
        );
        let ids = RequestIds::new(&headers);
        assert_eq!(ids.trace, headers[TRACE_HEADER]);
        // The function gets the same root and sampling, under a segment of its own.
        let function = ids.invoke_request(Bytes::new()).trace_id.unwrap();
        let (head, sampled) = function.rsplit_once(";Sampled=").unwrap();
        assert_eq!(sampled, "1");
        let (root, parent) = head.split_once(";Parent=").unwrap();
        assert_eq!(root, "Root=1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(parent.len(), 16);
        assert!(parent.chars().all(|c| c.is_ascii_hexdigit()), "{function}");
    }
}
