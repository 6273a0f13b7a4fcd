//! Image references (`[registry/]repository[:tag][@digest]`) read by hand, with the grammar
//! and Docker Hub normalization of the distribution project, as `oci_client::Reference`'s
//! own parser reads them. That parser compiles a Unicode regex on first use, which costs the
//! agent ~20 MB at its peak and ~10 MB for good.

use oci_client::Reference;

/// Longest repository name accepted.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Longest tag accepted (`[\w][\w.-]{0,127}`).
const TAG_LENGTH_MAX: usize = 128;

/// Why an image reference is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub(crate) struct InvalidReference(&'static str);

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn domain_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `component(\.component)*(:[0-9]+)?`
fn domain(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    host.split('.').all(domain_component)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or any number of `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let run = &s[start..i];
        let ok = run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}` (ASCII word characters).
fn tag(s: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    s.len() <= TAG_LENGTH_MAX
        && s.as_bytes().first().is_some_and(|&b| word(b))
        && s.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm:hex` with a known algorithm and the hex length it implies.
fn digest(s: &str) -> Result<(), InvalidReference> {
    let (algorithm, hex) = s
        .split_once(':')
        .ok_or(InvalidReference("the digest has no algorithm"))?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && part.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidReference("the digest is not algorithm:hex"));
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(InvalidReference("the digest's algorithm is not supported")),
    };
    if hex.len() != expected {
        return Err(InvalidReference("the digest has the wrong length"));
    }
    Ok(())
}

/// Parses an image reference: `latest` when neither tag nor digest is given; a name whose
/// first part has no `.` or `:` (and is not `localhost`) is on Docker Hub (`docker.io`,
/// `library/` for one-part names).
pub(crate) fn parse(reference: &str) -> Result<Reference, InvalidReference> {
    if reference.is_empty() {
        return Err(InvalidReference("the reference is empty"));
    }
    let (rest, digest_part) = match reference.split_once('@') {
        Some((rest, d)) => (rest, Some(d)),
        None => (reference, None),
    };
    let (name, tag_part) = match rest.rsplit_once(':') {
        Some((name, t)) if !t.contains('/') => (name, Some(t)),
        _ => (rest, None),
    };
    if let Some(t) = tag_part
        && !tag(t)
    {
        return Err(InvalidReference("the tag is not valid"));
    }
    if let Some(d) = digest_part {
        digest(d)?;
    }
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let valid = rest.iter().all(|part| path_component(part))
        && (path_component(first) || (!rest.is_empty() && domain(first)));
    if !valid {
        return Err(InvalidReference("the name is not valid"));
    }
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((left, right)) if left.contains('.') || left.contains(':') || left == "localhost" => {
            (left.to_owned(), right.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if registry == "index.docker.io" {
        registry = "docker.io".into();
    }
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(InvalidReference("the name is too long"));
    }
    let tag_part = tag_part.map(str::to_owned);
    Ok(match (tag_part, digest_part) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d.into()),
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => {
            Reference::with_tag(registry, repository, t.unwrap_or_else(|| "latest".into()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_references_as_the_distribution_parser_does() {
        let sha256 = format!("sha256:{}", "a".repeat(64));
        let sha512 = format!("sha512:{}", "0123456789abcdef".repeat(8));
        let mut cases: Vec<String> = [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "docker.io/busybox",
            "index.docker.io/busybox:latest",
            "test.com:tag",
            "test.com:5000",
            "test.com:5000/repo",
            "test.com:5000/repo:tag",
            "127.0.0.1:5000/esb-testfn:latest",
            "localhost/foo",
            "localhost:5000/a/b/c:v1.2_3-x",
            "lowercase:Uppercase",
            "foo_bar.com:8080",
            "foo/foo_bar.com:8080",
            "a.b-c__d/e--f.g:x",
            "ghcr.io/owner/img",
            "my-registry.example.com/team/app:2024.01",
            "Uppercase:tag",
            "ghcr.io/Owner/img",
            "a/b/",
            "a//b",
            "-a/b",
            "a-/b",
            "a/b_",
            "a/b___c",
            "a/b..c",
            "a/b.-c",
            "host:port/repo",
            "host:/repo",
            ":tag",
            "repo:",
            "repo:-tag",
            "repo:.tag",
            "repo:tag:tag",
            "repo@",
            "repo@sha256",
            "repo@sha256:abc",
            "repo@md5:0123456789abcdef0123456789abcdef",
            "-host.com/repo",
            "host-.com/repo",
            "host..com/repo",
            "repo#x",
            "rëpo",
            " repo",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        cases.push(format!("busybox@{sha256}"));
        cases.push(format!("127.0.0.1:5000/x:v1@{sha256}"));
        cases.push(format!("busybox@{sha512}"));
        cases.push(format!("busybox@sha256:{}", "a".repeat(63)));
        cases.push(format!("busybox@sha256:{}", "g".repeat(64)));
        cases.push(format!("repo:{}", "t".repeat(128)));
        cases.push(format!("repo:{}", "t".repeat(129)));
        cases.push(format!("library/{}", "a".repeat(247)));
        cases.push(format!("library/{}", "a".repeat(248)));
        for case in &cases {
            let theirs: Result<Reference, _> = case.parse();
            let ours = parse(case);
            match (&theirs, &ours) {
                (Ok(theirs), Ok(ours)) => {
                    assert_eq!(
                        (
                            ours.registry(),
                            ours.repository(),
                            ours.tag(),
                            ours.digest()
                        ),
                        (
                            theirs.registry(),
                            theirs.repository(),
                            theirs.tag(),
                            theirs.digest()
                        ),
                        "{case}"
                    );
                    assert_eq!(ours.whole(), theirs.whole(), "{case}");
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{case:?}: oci_client says {theirs:?}, this parser {ours:?}"),
            }
        }
        // Tags are ASCII, as the distribution spec has them (the regex's `\w` is Unicode).
        assert_eq!(
            parse("repo:t\u{e0}g").map(|r| r.whole()),
            Err(InvalidReference("the tag is not valid"))
        );
    }
}
