//! DynamoDB's JSON protocol: `DescribeTable`, `CreateTable`.

use std::time::{Duration, Instant};

use esb_router::{KeyElement, SecondaryIndex, TableResource, Throughput};
use serde_json::{Value, json};

use super::client::{Answer, Client};
use super::{Outcome, ProvisionError};

/// How often a table that is being created is asked for its status.
const POLL: Duration = Duration::from_millis(200);

/// Creates `table` unless it exists, then waits (up to `active_timeout`) for it to be ACTIVE.
pub(crate) async fn ensure_table(
    client: &Client,
    table: &TableResource,
    active_timeout: Duration,
) -> Result<Outcome, ProvisionError> {
    let created = match describe(client, &table.name).await? {
        Some(_) => false,
        None => {
            let answer = call(client, "CreateTable", &create_table_request(table)).await?;
            match error_type(&answer) {
                None => true,
                // Created by someone else meanwhile: left as is.
                Some((kind, _)) if kind == "ResourceInUseException" => false,
                Some((kind, message)) => {
                    return Err(refused(
                        client,
                        "CreateTable",
                        &table.name,
                        &answer,
                        kind,
                        message,
                    ));
                }
            }
        }
    };
    let started = Instant::now();
    loop {
        let status = describe(client, &table.name)
            .await?
            .and_then(|t| t["TableStatus"].as_str().map(str::to_owned));
        if status.as_deref() == Some("ACTIVE") {
            break;
        }
        if started.elapsed() >= active_timeout {
            return Err(ProvisionError::NotActive {
                table: table.name.clone(),
                status: status.unwrap_or_else(|| "absent".into()),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(Outcome {
        kind: "table",
        logical_id: table.logical_id.clone(),
        name: table.name.clone(),
        created,
    })
}

/// The table's description, `None` when it does not exist.
async fn describe(client: &Client, name: &str) -> Result<Option<Value>, ProvisionError> {
    let answer = call(client, "DescribeTable", &json!({ "TableName": name })).await?;
    match error_type(&answer) {
        None => match serde_json::from_slice::<Value>(&answer.body) {
            Ok(body) => Ok(Some(body["Table"].clone())),
            Err(e) => {
                let start = String::from_utf8_lossy(&answer.body[..answer.body.len().min(120)])
                    .into_owned();
                Err(refused(
                    client,
                    "DescribeTable",
                    name,
                    &answer,
                    "InvalidResponse".to_owned(),
                    format!("the answer is not JSON ({e}): {start:?}"),
                ))
            }
        },
        Some((kind, _)) if kind == "ResourceNotFoundException" => Ok(None),
        Some((kind, message)) => Err(refused(
            client,
            "DescribeTable",
            name,
            &answer,
            kind,
            message,
        )),
    }
}

async fn call(client: &Client, operation: &str, body: &Value) -> Result<Answer, ProvisionError> {
    let headers = [
        ("content-type", "application/x-amz-json-1.0".to_owned()),
        ("x-amz-target", format!("DynamoDB_20120810.{operation}")),
    ];
    client
        .send(
            reqwest::Method::POST,
            "/",
            &headers,
            body.to_string().into_bytes(),
        )
        .await
}

/// `(short error type, message)` of an answer that is not a success.
fn error_type(answer: &Answer) -> Option<(String, String)> {
    if answer.status.is_success() {
        return None;
    }
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let text = String::from_utf8_lossy(&answer.body);
    // A JSON error, or an XML one (authentication errors of some servers).
    let kind = match body["__type"].as_str() {
        Some(kind) => kind.rsplit('#').next().unwrap_or(kind).to_owned(),
        None => super::s3::element(&text, "Code").unwrap_or_default(),
    };
    let message = body["message"]
        .as_str()
        .or_else(|| body["Message"].as_str())
        .map(str::to_owned)
        .or_else(|| super::s3::element(&text, "Message"))
        .unwrap_or_else(|| text.chars().take(300).collect());
    Some((kind, message))
}

fn refused(
    client: &Client,
    operation: &'static str,
    resource: &str,
    answer: &Answer,
    code: String,
    message: String,
) -> ProvisionError {
    ProvisionError::Refused(Box::new(super::Refusal {
        service: client.service().label(),
        endpoint: client.endpoint().to_owned(),
        operation,
        resource: resource.to_owned(),
        status: answer.status.as_u16(),
        code,
        message,
    }))
}

fn keys(schema: &[KeyElement]) -> Value {
    schema
        .iter()
        .map(|k| json!({ "AttributeName": k.attribute_name, "KeyType": k.key_type.as_str() }))
        .collect()
}

fn throughput(t: &Throughput) -> Value {
    json!({ "ReadCapacityUnits": t.read_capacity_units, "WriteCapacityUnits": t.write_capacity_units })
}

fn index(index: &SecondaryIndex) -> Value {
    let mut projection = json!({ "ProjectionType": index.projection_type });
    if !index.non_key_attributes.is_empty() {
        projection["NonKeyAttributes"] = json!(index.non_key_attributes);
    }
    let mut value = json!({
        "IndexName": index.name,
        "KeySchema": keys(&index.key_schema),
        "Projection": projection,
    });
    if let Some(t) = &index.provisioned_throughput {
        value["ProvisionedThroughput"] = throughput(t);
    }
    value
}

/// The `CreateTable` request of `table`.
pub(crate) fn create_table_request(table: &TableResource) -> Value {
    let mut request = json!({
        "TableName": table.name,
        "KeySchema": keys(&table.key_schema),
        "AttributeDefinitions": table.attribute_definitions.iter().map(|a| json!({
            "AttributeName": a.attribute_name,
            "AttributeType": a.attribute_type,
        })).collect::<Value>(),
        "BillingMode": table.billing_mode.as_str(),
    });
    if let Some(t) = &table.provisioned_throughput {
        request["ProvisionedThroughput"] = throughput(t);
    }
    if !table.global_secondary_indexes.is_empty() {
        request["GlobalSecondaryIndexes"] =
            table.global_secondary_indexes.iter().map(index).collect();
    }
    if !table.local_secondary_indexes.is_empty() {
        request["LocalSecondaryIndexes"] =
            table.local_secondary_indexes.iter().map(index).collect();
    }
    if let Some(view) = table.stream_view_type {
        request["StreamSpecification"] =
            json!({ "StreamEnabled": true, "StreamViewType": view.as_str() });
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(resources: &str) -> Vec<TableResource> {
        let template = format!("Resources:\n{resources}");
        esb_router::Config::from_sam_str(&template, &|_| None)
            .unwrap()
            .resources
            .tables
    }

    #[test]
    fn provisioned_tables_carry_their_capacity_and_their_indexes_theirs() {
        let tables = tables(
            "  T:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      \
             AttributeDefinitions: [{ AttributeName: a, AttributeType: S }, { AttributeName: b, AttributeType: N }]\n      \
             KeySchema: [{ AttributeName: a, KeyType: HASH }]\n      \
             ProvisionedThroughput: { ReadCapacityUnits: 5, WriteCapacityUnits: 6 }\n      \
             GlobalSecondaryIndexes:\n        - IndexName: by-b\n          KeySchema: [{ AttributeName: b, KeyType: HASH }]\n          \
             Projection: { ProjectionType: INCLUDE, NonKeyAttributes: [c] }\n          \
             ProvisionedThroughput: { ReadCapacityUnits: 1, WriteCapacityUnits: 2 }\n  \
             S:\n    Type: AWS::Serverless::SimpleTable\n    Properties:\n      \
             ProvisionedThroughput: { ReadCapacityUnits: 3, WriteCapacityUnits: 4 }\n",
        );
        assert_eq!(
            create_table_request(&tables[0]),
            json!({
                "TableName": "T-table",
                "KeySchema": [{ "AttributeName": "a", "KeyType": "HASH" }],
                "AttributeDefinitions": [
                    { "AttributeName": "a", "AttributeType": "S" },
                    { "AttributeName": "b", "AttributeType": "N" },
                ],
                "BillingMode": "PROVISIONED",
                "ProvisionedThroughput": { "ReadCapacityUnits": 5, "WriteCapacityUnits": 6 },
                "GlobalSecondaryIndexes": [{
                    "IndexName": "by-b",
                    "KeySchema": [{ "AttributeName": "b", "KeyType": "HASH" }],
                    "Projection": { "ProjectionType": "INCLUDE", "NonKeyAttributes": ["c"] },
                    "ProvisionedThroughput": { "ReadCapacityUnits": 1, "WriteCapacityUnits": 2 },
                }],
            })
        );
        assert_eq!(
            create_table_request(&tables[1]),
            json!({
                "TableName": "S-table",
                "KeySchema": [{ "AttributeName": "id", "KeyType": "HASH" }],
                "AttributeDefinitions": [{ "AttributeName": "id", "AttributeType": "S" }],
                "BillingMode": "PROVISIONED",
                "ProvisionedThroughput": { "ReadCapacityUnits": 3, "WriteCapacityUnits": 4 },
            })
        );
    }
}
