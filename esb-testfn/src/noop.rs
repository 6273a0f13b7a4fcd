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
    serve(&api)
}

/// Serves invocations from the Runtime API at `api`.
fn serve(api: &str) -> io::Result<()> {
    // `host:port`, maybe with a scheme and a path the API is served under, as the
    // `lambda_runtime` client reads it (`cargo lambda watch` gives `http://127.0.0.1:9000/.rt/f`).
    let address = api.strip_prefix("http://").unwrap_or(api);
    let (host, prefix) = address.split_at(address.find('/').unwrap_or(address.len()));
    let stream = TcpStream::connect(host).map_err(|err| {
        io::Error::new(err.kind(), format!("AWS_LAMBDA_RUNTIME_API {api}: {err}"))
    })?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = stream;
    let next = format!("GET {prefix}{NEXT} HTTP/1.1\r\nhost: {host}\r\n\r\n");
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
            "POST {prefix}/2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n\
             host: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            ANSWER.len()
        )?;
        out.extend_from_slice(ANSWER);
        writer.write_all(&out)?;
        let head = read_head(&mut reader)?;
        event.resize(head.content_length, 0);
        reader.read_exact(&mut event)?;
        // Lambda answers 202; any success will do, as for the `lambda_runtime` client.
        if !(200..300).contains(&head.status) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Reads one request head from `reader` and returns its request line.
    fn request_line(reader: &mut impl BufRead) -> String {
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        let mut line = String::new();
        let mut length = 0;
        while reader.read_line(&mut line).unwrap() > 0 && line.trim_end() != "" {
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            line.clear();
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        first.trim_end().to_owned()
    }

    /// A Runtime API served under a path (as `cargo lambda watch` serves it) is called there.
    #[test]
    fn a_runtime_api_under_a_path_is_called_under_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = format!("http://{}/.rt", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut lines = vec![request_line(&mut reader)];
            writer
                .write_all(
                    b"HTTP/1.1 200 OK\r\nlambda-runtime-aws-request-id: r1\r\n\
                      content-length: 2\r\n\r\n{}",
                )
                .unwrap();
            lines.push(request_line(&mut reader));
            // `cargo lambda watch` accepts a response with 200, Lambda with 202.
            writer
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            lines.push(request_line(&mut reader));
            lines
        });
        let ended = serve(&api).unwrap_err();
        assert_eq!(ended.kind(), io::ErrorKind::UnexpectedEof, "{ended}");
        assert_eq!(
            server.join().unwrap(),
            [
                "GET /.rt/2018-06-01/runtime/invocation/next HTTP/1.1",
                "POST /.rt/2018-06-01/runtime/invocation/r1/response HTTP/1.1",
                "GET /.rt/2018-06-01/runtime/invocation/next HTTP/1.1",
            ]
        );
    }
}
