//! A no-op function on a minimal custom runtime, as a `provided.*` bootstrap would be
//! written: a blocking HTTP/1.1 client of the Lambda Runtime API on one keep-alive connection
//! that answers every invocation with `{"statusCode":200,"body":"ok"}`.
//!
//! It costs a handful of system calls per invocation, so a load bench that drives it measures
//! what stands in front of the function rather than the function's own runtime client.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The answer to every invocation: an API Gateway proxy response.
const ANSWER: &[u8] = br#"{"statusCode":200,"body":"ok"}"#;
const NEXT: &str = "/2018-06-01/runtime/invocation/next";

/// The parts of a Runtime API response head this runtime needs.
struct Head {
    status: u16,
    content_length: usize,
    request_id: Option<String>,
}

/// Serves invocations until the Runtime API goes away (or refuses an answer).
pub fn run() -> io::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .map_err(|_| io::Error::other("AWS_LAMBDA_RUNTIME_API is not set"))?;
    let stream = TcpStream::connect(&api)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = stream;
    let next = format!("GET {NEXT} HTTP/1.1\r\nhost: {api}\r\n\r\n");
    let mut event = Vec::new();
    let mut out = Vec::with_capacity(512);
    loop {
        writer.write_all(next.as_bytes())?;
        let head = read_head(&mut reader)?;
        event.resize(head.content_length, 0);
        reader.read_exact(&mut event)?;
        let request_id = match (head.status, head.request_id) {
            (200, Some(id)) => id,
            (status, _) => {
                return Err(io::Error::other(format!(
                    "GET {NEXT} answered {status}: {}",
                    String::from_utf8_lossy(&event)
                )));
            }
        };
        out.clear();
        write!(
            out,
            "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n\
             host: {api}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            ANSWER.len()
        )?;
        out.extend_from_slice(ANSWER);
        writer.write_all(&out)?;
        let head = read_head(&mut reader)?;
        event.resize(head.content_length, 0);
        reader.read_exact(&mut event)?;
        if head.status != 202 {
            return Err(io::Error::other(format!(
                "the response to {request_id} was refused with {}: {}",
                head.status,
                String::from_utf8_lossy(&event)
            )));
        }
    }
}

/// Reads a response head: the status line and headers up to the blank line.
fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the Runtime API closed the connection",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP status line: {line:?}")))?;
    let mut head = Head {
        status,
        content_length: 0,
        request_id: None,
    };
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value
                .parse()
                .map_err(|_| io::Error::other(format!("bad content-length {value:?}")))?;
        } else if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
            head.request_id = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::other(
                "chunked Runtime API responses are not supported by this runtime",
            ));
        }
    }
}
