//! S3's REST/XML protocol: `HeadBucket`, `CreateBucket`, `PutBucketLifecycleConfiguration`,
//! `PutBucketCors` (path-style addressing).

use base64::Engine as _;
use esb_router::{BucketResource, CorsRule, LifecycleRule};
use md5::Digest as _;

use super::client::{Answer, Client};
use super::{Outcome, ProvisionError};

/// Creates `bucket` unless it exists, then puts its configured lifecycle and CORS rules.
pub(crate) async fn ensure_bucket(
    client: &Client,
    bucket: &BucketResource,
    region: &str,
) -> Result<Outcome, ProvisionError> {
    let path = format!("/{}", bucket.name);
    let outcome = |created| Outcome {
        kind: "bucket",
        logical_id: bucket.logical_id.clone(),
        name: bucket.name.clone(),
        created,
    };
    let head = client
        .send(reqwest::Method::HEAD, &path, &[], Vec::new())
        .await?;
    let exists = match head.status.as_u16() {
        200..=299 => true,
        404 => false,
        // A HEAD answer has no error document to quote.
        403 => {
            return Err(ProvisionError::BucketForbidden {
                endpoint: client.endpoint().to_owned(),
                bucket: bucket.name.clone(),
                region: region.to_owned(),
            });
        }
        _ => return Err(refused(client, "HeadBucket", &bucket.name, &head)),
    };
    let created = !exists && create(client, bucket, &path, region).await?;
    // The rules are put on every start, not only at creation: the PUTs replace what is there,
    // so a start that stopped after creating the bucket is completed by the next one.
    if !bucket.lifecycle_rules.is_empty() {
        let xml = lifecycle_xml(&bucket.lifecycle_rules);
        put_config(
            client,
            &bucket.name,
            "lifecycle",
            "PutBucketLifecycleConfiguration",
            xml,
        )
        .await?;
    }
    if !bucket.cors_rules.is_empty() {
        let xml = cors_xml(&bucket.cors_rules);
        put_config(client, &bucket.name, "cors", "PutBucketCors", xml).await?;
    }
    Ok(outcome(created))
}

/// CreateBucket; `false` when it already existed (created meanwhile by this caller).
async fn create(
    client: &Client,
    bucket: &BucketResource,
    path: &str,
    region: &str,
) -> Result<bool, ProvisionError> {
    let body = if region == "us-east-1" {
        Vec::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            escape(region)
        )
        .into_bytes()
    };
    let created = client.send(reqwest::Method::PUT, path, &[], body).await?;
    if !created.status.is_success() {
        if code(&created).as_deref() == Some("BucketAlreadyOwnedByYou") {
            return Ok(false);
        }
        return Err(refused(client, "CreateBucket", &bucket.name, &created));
    }
    Ok(true)
}

/// `PUT /<bucket>?<sub>` with an XML body and its `Content-MD5`, as S3 requires for these.
async fn put_config(
    client: &Client,
    bucket: &str,
    sub: &str,
    operation: &'static str,
    xml: String,
) -> Result<(), ProvisionError> {
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml.as_bytes()));
    let headers = [
        ("content-type", "application/xml".to_owned()),
        ("content-md5", md5),
    ];
    let answer = client
        .send(
            reqwest::Method::PUT,
            &format!("/{bucket}?{sub}"),
            &headers,
            xml.into_bytes(),
        )
        .await?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(refused(client, operation, bucket, &answer))
    }
}

/// The `<Code>` of an S3 error document.
fn code(answer: &Answer) -> Option<String> {
    element(&String::from_utf8_lossy(&answer.body), "Code")
}

/// The text of the first `<name>` element of `xml`.
pub(crate) fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_owned())
}

fn refused(
    client: &Client,
    operation: &'static str,
    bucket: &str,
    answer: &Answer,
) -> ProvisionError {
    let text = String::from_utf8_lossy(&answer.body);
    ProvisionError::Refused(Box::new(super::Refusal {
        service: client.service().label(),
        endpoint: client.endpoint().to_owned(),
        operation,
        resource: bucket.to_owned(),
        status: answer.status.as_u16(),
        code: element(&text, "Code").unwrap_or_default(),
        message: element(&text, "Message").unwrap_or_else(|| {
            if text.trim().is_empty() {
                "the answer has no error document".to_owned()
            } else {
                text.chars().take(300).collect()
            }
        }),
    }))
}

/// Escapes text for an XML element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn tag(out: &mut String, name: &str, text: &str) {
    out.push_str(&format!("<{name}>{}</{name}>", escape(text)));
}

/// The `PutBucketLifecycleConfiguration` document of `rules`.
pub(crate) fn lifecycle_xml(rules: &[LifecycleRule]) -> String {
    let mut out =
        String::from("<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for rule in rules {
        out.push_str("<Rule>");
        if rule.expiration_days.is_some() || rule.expiration_date.is_some() {
            out.push_str("<Expiration>");
            if let Some(days) = rule.expiration_days {
                tag(&mut out, "Days", &days.to_string());
            }
            if let Some(date) = &rule.expiration_date {
                tag(&mut out, "Date", date);
            }
            out.push_str("</Expiration>");
        }
        if let Some(id) = &rule.id {
            tag(&mut out, "ID", id);
        }
        out.push_str("<Filter>");
        tag(&mut out, "Prefix", &rule.prefix);
        out.push_str("</Filter>");
        tag(
            &mut out,
            "Status",
            if rule.enabled { "Enabled" } else { "Disabled" },
        );
        if let Some(days) = rule.noncurrent_expiration_days {
            out.push_str("<NoncurrentVersionExpiration>");
            tag(&mut out, "NoncurrentDays", &days.to_string());
            out.push_str("</NoncurrentVersionExpiration>");
        }
        if let Some(days) = rule.abort_incomplete_multipart_days {
            out.push_str("<AbortIncompleteMultipartUpload>");
            tag(&mut out, "DaysAfterInitiation", &days.to_string());
            out.push_str("</AbortIncompleteMultipartUpload>");
        }
        out.push_str("</Rule>");
    }
    out.push_str("</LifecycleConfiguration>");
    out
}

/// The `PutBucketCors` document of `rules`.
pub(crate) fn cors_xml(rules: &[CorsRule]) -> String {
    let mut out =
        String::from("<CORSConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for rule in rules {
        out.push_str("<CORSRule>");
        if let Some(id) = &rule.id {
            tag(&mut out, "ID", id);
        }
        for header in &rule.allowed_headers {
            tag(&mut out, "AllowedHeader", header);
        }
        for method in &rule.allowed_methods {
            tag(&mut out, "AllowedMethod", method);
        }
        for origin in &rule.allowed_origins {
            tag(&mut out, "AllowedOrigin", origin);
        }
        for header in &rule.exposed_headers {
            tag(&mut out, "ExposeHeader", header);
        }
        if let Some(age) = rule.max_age {
            tag(&mut out, "MaxAgeSeconds", &age.to_string());
        }
        out.push_str("</CORSRule>");
    }
    out.push_str("</CORSConfiguration>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(
            element("<Error><Code>NoSuchBucket</Code></Error>", "Code").as_deref(),
            Some("NoSuchBucket")
        );
    }
}
