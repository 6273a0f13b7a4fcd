//! Tables and buckets ESB creates at start: a SAM template's `AWS::DynamoDB::Table`,
//! `AWS::Serverless::SimpleTable` and `AWS::S3::Bucket` resources, and the `resources:`
//! section of `functions.yml` in the same shape.
//!
//! Names when a resource gives none (`TableName`, `BucketName`): a table is named by its
//! logical id (characters other than letters, digits, `_`, `-` and `.` become `-`, and a
//! name shorter than 3 gets `-table` appended); a bucket by its logical id in lowercase
//! (characters other than letters, digits, `.` and `-` become `-`, leading and trailing
//! `-`/`.` dropped, cut to 63, and `-bucket` appended when shorter than 3). The same
//! template always gives the same names, so a restart finds what it created before.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

use crate::Problem;
use crate::error::Report;
use crate::yaml::{self, Intrinsic, key_text, value_debug};

/// The account id in resource ARNs unless the lookup gives `AWS_ACCOUNT_ID` (the one of
/// the functions' own ARNs).
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";
/// The region in resource ARNs unless the lookup gives `AWS_REGION`.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The resource types ESB creates.
pub(crate) const RESOURCE_TYPES: &[&str] = &[
    "AWS::DynamoDB::Table",
    "AWS::Serverless::SimpleTable",
    "AWS::S3::Bucket",
];

/// The tables and buckets of the configuration, in the order they were declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resources {
    /// DynamoDB tables.
    pub tables: Vec<TableResource>,
    /// S3 buckets.
    pub buckets: Vec<BucketResource>,
}

impl Resources {
    /// Whether there is nothing to create.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.buckets.is_empty()
    }

    /// What `!Ref logical_id` gives: the table's or bucket's name.
    pub fn reference(&self, logical_id: &str) -> Option<&str> {
        self.table(logical_id)
            .map(|t| t.name.as_str())
            .or_else(|| self.bucket(logical_id).map(|b| b.name.as_str()))
    }

    /// What `!GetAtt logical_id.attribute` gives: a table's `Arn` / `StreamArn`, a bucket's
    /// `Arn` / `DomainName` / `RegionalDomainName`.
    pub fn attribute(&self, logical_id: &str, attribute: &str) -> Option<String> {
        if let Some(table) = self.table(logical_id) {
            return match attribute {
                "Arn" => Some(table.arn.clone()),
                "StreamArn" => table.stream_arn.clone(),
                _ => None,
            };
        }
        let bucket = self.bucket(logical_id)?;
        match attribute {
            "Arn" => Some(format!("arn:aws:s3:::{}", bucket.name)),
            "DomainName" => Some(format!("{}.s3.amazonaws.com", bucket.name)),
            "RegionalDomainName" => Some(format!(
                "{}.s3.{}.amazonaws.com",
                bucket.name, bucket.region
            )),
            _ => None,
        }
    }

    fn table(&self, logical_id: &str) -> Option<&TableResource> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }

    fn bucket(&self, logical_id: &str) -> Option<&BucketResource> {
        self.buckets.iter().find(|b| b.logical_id == logical_id)
    }

    /// Whether `logical_id` is one of these resources.
    pub fn contains(&self, logical_id: &str) -> bool {
        self.table(logical_id).is_some() || self.bucket(logical_id).is_some()
    }
}

/// A DynamoDB table as `CreateTable` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableResource {
    /// The resource's logical id (`Resources.<id>`, `resources.<id>`).
    pub logical_id: String,
    /// The table name: `TableName`, else derived from the logical id.
    pub name: String,
    /// `arn:aws:dynamodb:<region>:<account>:table/<name>`.
    pub arn: String,
    /// The stream's ARN when the table has a stream.
    pub stream_arn: Option<String>,
    /// The primary key: a HASH key, then maybe a RANGE key.
    pub key_schema: Vec<KeyElement>,
    /// Types of the key attributes of the table and its indexes.
    pub attribute_definitions: Vec<AttributeDefinition>,
    /// Global secondary indexes.
    pub global_secondary_indexes: Vec<SecondaryIndex>,
    /// Local secondary indexes.
    pub local_secondary_indexes: Vec<SecondaryIndex>,
    /// `PROVISIONED` (with `provisioned_throughput`) or `PAY_PER_REQUEST`.
    pub billing_mode: BillingMode,
    /// Read and write capacity when provisioned.
    pub provisioned_throughput: Option<Throughput>,
    /// The stream's view type when the table has a stream.
    pub stream_view_type: Option<StreamViewType>,
}

/// One element of a key schema.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyElement {
    /// The attribute.
    pub attribute_name: String,
    /// HASH or RANGE.
    pub key_type: KeyType,
}

/// The role of a key attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyType {
    /// The partition key.
    Hash,
    /// The sort key.
    Range,
}

impl KeyType {
    /// `HASH` / `RANGE`, as DynamoDB spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Hash => "HASH",
            KeyType::Range => "RANGE",
        }
    }
}

/// The type of a key attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttributeDefinition {
    /// The attribute.
    pub attribute_name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

/// A global or local secondary index.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecondaryIndex {
    /// `IndexName`.
    pub name: String,
    /// Its key.
    pub key_schema: Vec<KeyElement>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    /// The attributes an `INCLUDE` projection adds.
    pub non_key_attributes: Vec<String>,
    /// A global index's own capacity when the table is provisioned.
    pub provisioned_throughput: Option<Throughput>,
}

/// Provisioned read and write capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Throughput {
    /// `ReadCapacityUnits`.
    pub read_capacity_units: u64,
    /// `WriteCapacityUnits`.
    pub write_capacity_units: u64,
}

/// How a table is billed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BillingMode {
    /// Provisioned capacity (CloudFormation's default).
    #[default]
    Provisioned,
    /// On demand.
    PayPerRequest,
}

impl BillingMode {
    /// `PROVISIONED` / `PAY_PER_REQUEST`.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingMode::Provisioned => "PROVISIONED",
            BillingMode::PayPerRequest => "PAY_PER_REQUEST",
        }
    }
}

/// What a table's stream records carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamViewType {
    /// `KEYS_ONLY`.
    KeysOnly,
    /// `NEW_IMAGE`.
    NewImage,
    /// `OLD_IMAGE`.
    OldImage,
    /// `NEW_AND_OLD_IMAGES`.
    NewAndOldImages,
}

impl StreamViewType {
    /// As DynamoDB spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamViewType::KeysOnly => "KEYS_ONLY",
            StreamViewType::NewImage => "NEW_IMAGE",
            StreamViewType::OldImage => "OLD_IMAGE",
            StreamViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "KEYS_ONLY" => StreamViewType::KeysOnly,
            "NEW_IMAGE" => StreamViewType::NewImage,
            "OLD_IMAGE" => StreamViewType::OldImage,
            "NEW_AND_OLD_IMAGES" => StreamViewType::NewAndOldImages,
            _ => return None,
        })
    }
}

/// An S3 bucket with its lifecycle rules and CORS rules.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketResource {
    /// The resource's logical id.
    pub logical_id: String,
    /// The bucket name: `BucketName`, else derived from the logical id.
    pub name: String,
    /// The region in its regional domain name.
    pub region: String,
    /// `LifecycleConfiguration.Rules`.
    pub lifecycle_rules: Vec<LifecycleRule>,
    /// `CorsConfiguration.CorsRules`.
    pub cors_rules: Vec<CorsRule>,
}

/// One lifecycle rule of a bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifecycleRule {
    /// `Id`.
    pub id: Option<String>,
    /// `Status: Enabled` (else `Disabled`).
    pub enabled: bool,
    /// `Prefix` of the objects it applies to (empty: all).
    pub prefix: String,
    /// `ExpirationInDays`.
    pub expiration_days: Option<u32>,
    /// `ExpirationDate` (ISO 8601).
    pub expiration_date: Option<String>,
    /// `NoncurrentVersionExpiration.NoncurrentDays` (or `NoncurrentVersionExpirationInDays`).
    pub noncurrent_expiration_days: Option<u32>,
    /// `AbortIncompleteMultipartUpload.DaysAfterInitiation`.
    pub abort_incomplete_multipart_days: Option<u32>,
}

/// One CORS rule of a bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CorsRule {
    /// `Id`.
    pub id: Option<String>,
    /// `AllowedMethods` (GET, PUT, HEAD, POST, DELETE).
    pub allowed_methods: Vec<String>,
    /// `AllowedOrigins`.
    pub allowed_origins: Vec<String>,
    /// `AllowedHeaders`.
    pub allowed_headers: Vec<String>,
    /// `ExposedHeaders`.
    pub exposed_headers: Vec<String>,
    /// `MaxAge` in seconds.
    pub max_age: Option<u32>,
}

/// Reads resources one by one, then checks them together.
pub(crate) struct ResourceReader<'r, 'p> {
    pub(crate) report: &'r mut Report<'p>,
    pub(crate) warnings: &'r mut Vec<Problem>,
    /// Resolves a scalar or an intrinsic function to text.
    pub(crate) resolve: &'r dyn Fn(&Value) -> Option<String>,
    /// `Resources` (SAM) or `resources` (functions.yml).
    pub(crate) section: &'static str,
    pub(crate) region: String,
    pub(crate) account: String,
    pub(crate) resources: Resources,
}

impl ResourceReader<'_, '_> {
    /// Reads `value` when its `Type` is one ESB creates; `false` for any other type.
    pub(crate) fn resource(&mut self, logical_id: &str, value: &Value) -> bool {
        let kind = value.get("Type").and_then(Value::as_str);
        let Some(kind) = kind.filter(|k| RESOURCE_TYPES.contains(k)) else {
            return false;
        };
        let item = format!("{}.{logical_id}", self.section);
        let empty = Mapping::new();
        let properties = match value.get("Properties") {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(p)) => p,
            Some(other) => {
                self.report.push(
                    &item,
                    "Properties",
                    format!("expected a mapping, found {}", value_debug(other)),
                );
                return true;
            }
        };
        let mut props = Props {
            map: properties,
            item: &item,
            reader: self,
        };
        match kind {
            "AWS::DynamoDB::Table" => {
                if let Some(table) = props.table(logical_id) {
                    self.resources.tables.push(table);
                }
            }
            "AWS::Serverless::SimpleTable" => {
                if let Some(table) = props.simple_table(logical_id) {
                    self.resources.tables.push(table);
                }
            }
            _ => {
                if let Some(bucket) = props.bucket(logical_id) {
                    self.resources.buckets.push(bucket);
                }
            }
        }
        true
    }

    /// The resources read, after reporting two of them with the same name.
    pub(crate) fn finish(self) -> Resources {
        let mut seen = BTreeMap::new();
        for table in &self.resources.tables {
            if let Some(first) = seen.insert(&table.name, &table.logical_id) {
                self.report.push(
                    &format!("{}.{}", self.section, table.logical_id),
                    "TableName",
                    format!(
                        "table {:?} is also the name of {}.{first}",
                        table.name, self.section
                    ),
                );
            }
        }
        let mut seen = BTreeMap::new();
        for bucket in &self.resources.buckets {
            if let Some(first) = seen.insert(&bucket.name, &bucket.logical_id) {
                self.report.push(
                    &format!("{}.{}", self.section, bucket.logical_id),
                    "BucketName",
                    format!(
                        "bucket {:?} is also the name of {}.{first}",
                        bucket.name, self.section
                    ),
                );
            }
        }
        self.resources
    }
}

/// The properties of one resource being read.
struct Props<'a, 'r, 'p> {
    map: &'a Mapping,
    item: &'a str,
    reader: &'a mut ResourceReader<'r, 'p>,
}

const TABLE_PROPERTIES: &[&str] = &[
    "TableName",
    "KeySchema",
    "AttributeDefinitions",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
    "ProvisionedThroughput",
    "StreamSpecification",
];
const SIMPLE_TABLE_PROPERTIES: &[&str] = &["TableName", "PrimaryKey", "ProvisionedThroughput"];
const BUCKET_PROPERTIES: &[&str] = &["BucketName", "LifecycleConfiguration", "CorsConfiguration"];

impl Props<'_, '_, '_> {
    fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.reader.report.push(self.item, field, message);
    }

    fn warn_unknown(&mut self, known: &[&str]) {
        for key in self.map.keys().map(key_text) {
            if !known.contains(&key.as_str()) {
                self.reader.warnings.push(Problem::new(
                    self.reader.report.file,
                    self.item,
                    &key,
                    "not applied: ESB does not set this property when it creates the resource",
                ));
            }
        }
    }

    /// A scalar (or an intrinsic that resolves) as text, reporting anything else.
    fn text(&mut self, value: &Value, field: &str) -> Option<String> {
        let reader = &mut *self.reader;
        yaml::resolved_text(value, reader.resolve, reader.report, self.item, field)
    }

    fn get_text(&mut self, map: &Mapping, key: &str, field: &str) -> Option<String> {
        let value = map.get(key)?;
        self.text(value, field)
    }

    fn number(&mut self, value: &Value, field: &str) -> Option<u64> {
        let reader = &mut *self.reader;
        yaml::resolved_unsigned(value, reader.resolve, reader.report, self.item, field)
    }

    fn days(&mut self, map: &Mapping, key: &str, field: &str) -> Option<u32> {
        let value = map.get(key)?;
        let n = self.number(value, field)?;
        match u32::try_from(n) {
            Ok(days) if days >= 1 => Some(days),
            _ => {
                self.problem(field, format!("{n} is not a number of days (1 or more)"));
                None
            }
        }
    }

    fn list<'v>(&mut self, value: &'v Value, field: &str) -> &'v [Value] {
        yaml::list(value, self.reader.report, self.item, field)
    }

    fn mapping<'v>(&mut self, value: &'v Value, field: &str) -> Option<&'v Mapping> {
        yaml::plain_mapping(value, self.reader.report, self.item, field)
    }

    fn strings(&mut self, map: &Mapping, key: &str, field: &str) -> Vec<String> {
        let Some(value) = map.get(key) else {
            return Vec::new();
        };
        let items = self.list(value, field);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| self.text(v, &format!("{field}[{i}]")))
            .collect()
    }

    fn table_name(&mut self, logical_id: &str) -> String {
        match self.map.get("TableName") {
            Some(value) => match self.text(value, "TableName") {
                Some(name) => {
                    if let Err(reason) = check_table_name(&name) {
                        self.problem("TableName", format!("{name:?} {reason}"));
                    }
                    name
                }
                None => table_name_of(logical_id),
            },
            None => table_name_of(logical_id),
        }
    }

    fn throughput(&mut self, value: &Value, field: &str) -> Option<Throughput> {
        let map = self.mapping(value, field)?;
        let mut units = |key: &str| -> Option<u64> {
            let at = format!("{field}.{key}");
            match map.get(key) {
                Some(v) => self.number(v, &at).filter(|n| {
                    let ok = *n >= 1;
                    if !ok {
                        self.problem(&at, "must be at least 1");
                    }
                    ok
                }),
                None => {
                    self.problem(&at, "missing");
                    None
                }
            }
        };
        let read = units("ReadCapacityUnits");
        let write = units("WriteCapacityUnits");
        Some(Throughput {
            read_capacity_units: read?,
            write_capacity_units: write?,
        })
    }

    fn key_schema(&mut self, value: Option<&Value>, field: &str) -> Vec<KeyElement> {
        let Some(value) = value else {
            self.problem(field, "missing: a table or index needs a HASH key");
            return Vec::new();
        };
        let items = self.list(value, field);
        let mut keys = Vec::new();
        for (i, element) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let Some(map) = self.mapping(element, &at) else {
                continue;
            };
            let name = self.get_text(map, "AttributeName", &format!("{at}.AttributeName"));
            let kind = self.get_text(map, "KeyType", &format!("{at}.KeyType"));
            let key_type = match kind.as_deref() {
                Some("HASH") => Some(KeyType::Hash),
                Some("RANGE") => Some(KeyType::Range),
                Some(other) => {
                    self.problem(
                        &format!("{at}.KeyType"),
                        format!("{other:?} is not HASH or RANGE"),
                    );
                    None
                }
                None => {
                    if !map.contains_key("KeyType") {
                        self.problem(&format!("{at}.KeyType"), "missing: HASH or RANGE");
                    }
                    None
                }
            };
            if name.is_none() && !map.contains_key("AttributeName") {
                self.problem(&format!("{at}.AttributeName"), "missing");
            }
            if let (Some(attribute_name), Some(key_type)) = (name, key_type) {
                keys.push(KeyElement {
                    attribute_name,
                    key_type,
                });
            }
        }
        if keys.len() == items.len() {
            let hashes = keys.iter().filter(|k| k.key_type == KeyType::Hash).count();
            let ranges = keys.len() - hashes;
            if items.is_empty() || items.len() > 2 {
                self.problem(
                    field,
                    format!(
                        "has {} elements: a key is one HASH element, then at most one RANGE element",
                        items.len()
                    ),
                );
            } else if hashes != 1 || ranges > 1 {
                self.problem(
                    field,
                    format!("has {hashes} HASH and {ranges} RANGE elements: a key has exactly one HASH element and at most one RANGE element"),
                );
            } else if keys[0].key_type != KeyType::Hash {
                self.problem(field, "the HASH element must come first");
            } else if keys.len() == 2 && keys[0].attribute_name == keys[1].attribute_name {
                self.problem(
                    field,
                    format!("uses {:?} as both HASH and RANGE", keys[0].attribute_name),
                );
            }
        }
        keys
    }

    fn index(
        &mut self,
        value: &Value,
        field: &str,
        global: bool,
        billing: BillingMode,
    ) -> Option<SecondaryIndex> {
        let map = self.mapping(value, field)?;
        let name = match map.get("IndexName") {
            Some(v) => self.text(v, &format!("{field}.IndexName")),
            None => {
                self.problem(&format!("{field}.IndexName"), "missing");
                None
            }
        };
        if let Some(name) = &name
            && let Err(reason) = check_table_name(name)
        {
            self.problem(&format!("{field}.IndexName"), format!("{name:?} {reason}"));
        }
        let key_schema = self.key_schema(map.get("KeySchema"), &format!("{field}.KeySchema"));
        let (projection_type, non_key_attributes) = match map.get("Projection") {
            Some(p) => {
                let at = format!("{field}.Projection");
                let p = self.mapping(p, &at)?;
                let kind = self
                    .get_text(p, "ProjectionType", &format!("{at}.ProjectionType"))
                    .unwrap_or_else(|| "ALL".into());
                if !matches!(kind.as_str(), "ALL" | "KEYS_ONLY" | "INCLUDE") {
                    self.problem(
                        &format!("{at}.ProjectionType"),
                        format!("{kind:?} is not ALL, KEYS_ONLY or INCLUDE"),
                    );
                }
                let attrs = self.strings(p, "NonKeyAttributes", &format!("{at}.NonKeyAttributes"));
                if kind == "INCLUDE" && attrs.is_empty() {
                    self.problem(
                        &format!("{at}.NonKeyAttributes"),
                        "missing: an INCLUDE projection names the attributes it adds",
                    );
                }
                (kind, attrs)
            }
            None => {
                self.problem(&format!("{field}.Projection"), "missing");
                ("ALL".into(), Vec::new())
            }
        };
        let provisioned_throughput = match map.get("ProvisionedThroughput") {
            Some(v) if global => self.throughput(v, &format!("{field}.ProvisionedThroughput")),
            Some(_) => {
                self.problem(
                    &format!("{field}.ProvisionedThroughput"),
                    "a local secondary index shares the table's capacity",
                );
                None
            }
            None => None,
        };
        if global && billing == BillingMode::Provisioned && provisioned_throughput.is_none() {
            self.problem(
                &format!("{field}.ProvisionedThroughput"),
                "missing: a global index of a PROVISIONED table needs its own capacity",
            );
        }
        Some(SecondaryIndex {
            name: name?,
            key_schema,
            projection_type,
            non_key_attributes,
            provisioned_throughput,
        })
    }

    fn table(&mut self, logical_id: &str) -> Option<TableResource> {
        self.warn_unknown(TABLE_PROPERTIES);
        let name = self.table_name(logical_id);
        let key_schema = self.key_schema(self.map.get("KeySchema"), "KeySchema");
        let mut attribute_definitions = Vec::new();
        match self.map.get("AttributeDefinitions") {
            Some(value) => {
                for (i, item) in self.list(value, "AttributeDefinitions").iter().enumerate() {
                    let at = format!("AttributeDefinitions[{i}]");
                    let Some(map) = self.mapping(item, &at) else {
                        continue;
                    };
                    let attribute_name =
                        self.get_text(map, "AttributeName", &format!("{at}.AttributeName"));
                    let attribute_type =
                        self.get_text(map, "AttributeType", &format!("{at}.AttributeType"));
                    if let Some(kind) = &attribute_type
                        && !matches!(kind.as_str(), "S" | "N" | "B")
                    {
                        self.problem(
                            &format!("{at}.AttributeType"),
                            format!("{kind:?} is not S, N or B"),
                        );
                    }
                    match (attribute_name, attribute_type) {
                        (Some(attribute_name), Some(attribute_type)) => {
                            attribute_definitions.push(AttributeDefinition {
                                attribute_name,
                                attribute_type,
                            })
                        }
                        _ => self.problem(&at, "needs AttributeName and AttributeType"),
                    }
                }
            }
            None => self.problem(
                "AttributeDefinitions",
                "missing: the key attributes need their types",
            ),
        }
        let billing_mode = match self
            .get_text(self.map, "BillingMode", "BillingMode")
            .as_deref()
        {
            None | Some("PROVISIONED") => BillingMode::Provisioned,
            Some("PAY_PER_REQUEST") => BillingMode::PayPerRequest,
            Some(other) => {
                self.problem(
                    "BillingMode",
                    format!("{other:?} is not PROVISIONED or PAY_PER_REQUEST"),
                );
                BillingMode::PayPerRequest
            }
        };
        let provisioned_throughput = match self.map.get("ProvisionedThroughput") {
            Some(v) => self.throughput(v, "ProvisionedThroughput"),
            None => None,
        };
        if billing_mode == BillingMode::Provisioned
            && provisioned_throughput.is_none()
            && !self.map.contains_key("ProvisionedThroughput")
        {
            self.problem(
                "ProvisionedThroughput",
                "missing: a PROVISIONED table (the default BillingMode) needs it; or set BillingMode: PAY_PER_REQUEST",
            );
        }
        let mut global_secondary_indexes = Vec::new();
        if let Some(value) = self.map.get("GlobalSecondaryIndexes") {
            for (i, index) in self
                .list(value, "GlobalSecondaryIndexes")
                .iter()
                .enumerate()
            {
                let at = format!("GlobalSecondaryIndexes[{i}]");
                global_secondary_indexes.extend(self.index(index, &at, true, billing_mode));
            }
        }
        let mut local_secondary_indexes = Vec::new();
        if let Some(value) = self.map.get("LocalSecondaryIndexes") {
            for (i, index) in self.list(value, "LocalSecondaryIndexes").iter().enumerate() {
                let at = format!("LocalSecondaryIndexes[{i}]");
                if let Some(index) = self.index(index, &at, false, billing_mode) {
                    let hash = |keys: &[KeyElement]| {
                        keys.iter()
                            .find(|k| k.key_type == KeyType::Hash)
                            .map(|k| k.attribute_name.clone())
                    };
                    if hash(&index.key_schema) != hash(&key_schema) {
                        self.problem(
                            &format!("{at}.KeySchema"),
                            "a local secondary index has the table's HASH key",
                        );
                    }
                    if !index
                        .key_schema
                        .iter()
                        .any(|k| k.key_type == KeyType::Range)
                    {
                        self.problem(
                            &format!("{at}.KeySchema"),
                            "a local secondary index needs a RANGE key",
                        );
                    }
                    local_secondary_indexes.push(index);
                }
            }
            if !key_schema.iter().any(|k| k.key_type == KeyType::Range) {
                self.problem(
                    "LocalSecondaryIndexes",
                    "a table with local secondary indexes needs a RANGE key",
                );
            }
        }
        let mut names: Vec<&str> = global_secondary_indexes
            .iter()
            .chain(&local_secondary_indexes)
            .map(|i| i.name.as_str())
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
            let message = format!("index {:?} is defined twice", pair[0]);
            self.problem("GlobalSecondaryIndexes", message);
        }
        // Every key attribute has a definition, and every definition is a key attribute.
        let defined: Vec<&str> = attribute_definitions
            .iter()
            .map(|a| a.attribute_name.as_str())
            .collect();
        let keys: Vec<(String, &str)> = key_schema
            .iter()
            .map(|k| ("KeySchema".to_owned(), k.attribute_name.as_str()))
            .chain(
                global_secondary_indexes
                    .iter()
                    .enumerate()
                    .flat_map(|(i, x)| {
                        x.key_schema.iter().map(move |k| {
                            (
                                format!("GlobalSecondaryIndexes[{i}].KeySchema"),
                                k.attribute_name.as_str(),
                            )
                        })
                    }),
            )
            .chain(
                local_secondary_indexes
                    .iter()
                    .enumerate()
                    .flat_map(|(i, x)| {
                        x.key_schema.iter().map(move |k| {
                            (
                                format!("LocalSecondaryIndexes[{i}].KeySchema"),
                                k.attribute_name.as_str(),
                            )
                        })
                    }),
            )
            .collect();
        if self.map.contains_key("AttributeDefinitions") {
            for (field, name) in &keys {
                if !defined.contains(name) {
                    self.problem(
                        field,
                        format!("key attribute {name:?} is missing from AttributeDefinitions"),
                    );
                }
            }
        }
        for (i, name) in defined.iter().enumerate() {
            if !keys.iter().any(|(_, k)| k == name) {
                self.problem(
                    &format!("AttributeDefinitions[{i}]"),
                    format!("{name:?} is no key attribute of the table or its indexes (DynamoDB defines key attributes only)"),
                );
            }
            if defined[..i].contains(name) {
                self.problem(
                    &format!("AttributeDefinitions[{i}]"),
                    format!("{name:?} is defined twice"),
                );
            }
        }
        let stream_view_type = match self.map.get("StreamSpecification") {
            Some(spec) => {
                let spec = self.mapping(spec, "StreamSpecification")?;
                let field = "StreamSpecification.StreamViewType";
                match self.get_text(spec, "StreamViewType", field) {
                    Some(text) => {
                        let view = StreamViewType::parse(&text);
                        if view.is_none() {
                            self.problem(
                                field,
                                format!("{text:?} is not KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES"),
                            );
                        }
                        view
                    }
                    None => {
                        if !spec.contains_key("StreamViewType") {
                            self.problem(field, "missing");
                        }
                        None
                    }
                }
            }
            None => None,
        };
        let arn = format!(
            "arn:aws:dynamodb:{}:{}:table/{name}",
            self.reader.region, self.reader.account
        );
        Some(TableResource {
            logical_id: logical_id.to_owned(),
            stream_arn: stream_view_type.map(|_| format!("{arn}/stream/1970-01-01T00:00:00.000")),
            arn,
            name,
            key_schema,
            attribute_definitions,
            global_secondary_indexes,
            local_secondary_indexes,
            billing_mode,
            provisioned_throughput: if billing_mode == BillingMode::Provisioned {
                provisioned_throughput
            } else {
                None
            },
            stream_view_type,
        })
    }

    /// SAM's `SimpleTable`: `PrimaryKey` (default `{Name: id, Type: String}`), on demand
    /// unless `ProvisionedThroughput` is given.
    fn simple_table(&mut self, logical_id: &str) -> Option<TableResource> {
        self.warn_unknown(SIMPLE_TABLE_PROPERTIES);
        let name = self.table_name(logical_id);
        let (key, kind) = match self.map.get("PrimaryKey") {
            Some(value) => {
                let map = self.mapping(value, "PrimaryKey")?;
                let key = self.get_text(map, "Name", "PrimaryKey.Name");
                if key.is_none() && !map.contains_key("Name") {
                    self.problem("PrimaryKey.Name", "missing");
                }
                let kind = self.get_text(map, "Type", "PrimaryKey.Type");
                let kind = match kind.as_deref() {
                    Some("String") => "S",
                    Some("Number") => "N",
                    Some("Binary") => "B",
                    Some(other) => {
                        self.problem(
                            "PrimaryKey.Type",
                            format!("{other:?} is not String, Number or Binary"),
                        );
                        return None;
                    }
                    None => {
                        if !map.contains_key("Type") {
                            self.problem("PrimaryKey.Type", "missing: String, Number or Binary");
                        }
                        return None;
                    }
                };
                (key?, kind)
            }
            None => ("id".to_owned(), "S"),
        };
        let provisioned_throughput = match self.map.get("ProvisionedThroughput") {
            Some(v) => Some(self.throughput(v, "ProvisionedThroughput")?),
            None => None,
        };
        let arn = format!(
            "arn:aws:dynamodb:{}:{}:table/{name}",
            self.reader.region, self.reader.account
        );
        Some(TableResource {
            logical_id: logical_id.to_owned(),
            name,
            arn,
            stream_arn: None,
            key_schema: vec![KeyElement {
                attribute_name: key.clone(),
                key_type: KeyType::Hash,
            }],
            attribute_definitions: vec![AttributeDefinition {
                attribute_name: key,
                attribute_type: kind.to_owned(),
            }],
            global_secondary_indexes: Vec::new(),
            local_secondary_indexes: Vec::new(),
            billing_mode: if provisioned_throughput.is_some() {
                BillingMode::Provisioned
            } else {
                BillingMode::PayPerRequest
            },
            provisioned_throughput,
            stream_view_type: None,
        })
    }

    fn bucket(&mut self, logical_id: &str) -> Option<BucketResource> {
        self.warn_unknown(BUCKET_PROPERTIES);
        let name = match self.map.get("BucketName") {
            Some(value) => {
                let name = self.text(value, "BucketName")?;
                if let Err(reason) = check_bucket_name(&name) {
                    self.problem("BucketName", format!("{name:?} {reason}"));
                }
                name
            }
            None => bucket_name_of(logical_id),
        };
        let lifecycle_rules =
            self.rules("LifecycleConfiguration", "Rules", Self::lifecycle_rule)?;
        let cors_rules = self.rules("CorsConfiguration", "CorsRules", Self::cors_rule)?;
        Some(BucketResource {
            logical_id: logical_id.to_owned(),
            name,
            region: self.reader.region.clone(),
            lifecycle_rules,
            cors_rules,
        })
    }

    /// The rules of an optional `<config>: {<list>: [...]}` property (a bucket's lifecycle or
    /// CORS), each read by `read` with its place for errors; `None` when `config` is not a
    /// mapping.
    fn rules<T>(
        &mut self,
        config: &str,
        list: &str,
        mut read: impl FnMut(&mut Self, &Value, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut rules = Vec::new();
        let Some(value) = self.map.get(config) else {
            return Some(rules);
        };
        let map = self.mapping(value, config)?;
        let field = format!("{config}.{list}");
        match map.get(list) {
            Some(items) => {
                for (i, rule) in self.list(items, &field).iter().enumerate() {
                    rules.extend(read(self, rule, &format!("{field}[{i}]")));
                }
            }
            None => self.problem(&field, "missing"),
        }
        Some(rules)
    }

    fn lifecycle_rule(&mut self, value: &Value, at: &str) -> Option<LifecycleRule> {
        let map = self.mapping(value, at)?;
        let mut rule = LifecycleRule::default();
        for key in map.keys().map(key_text) {
            match key.as_str() {
                "Id" | "Status" | "Prefix" | "ExpirationInDays" | "ExpirationDate"
                | "NoncurrentVersionExpirationInDays" | "NoncurrentVersionExpiration"
                | "AbortIncompleteMultipartUpload" => {}
                other => self.reader.warnings.push(Problem::new(
                    self.reader.report.file,
                    self.item,
                    format!("{at}.{other}"),
                    "not applied: ESB sets Id, Status, Prefix, ExpirationInDays, ExpirationDate, NoncurrentVersionExpiration and AbortIncompleteMultipartUpload",
                )),
            }
        }
        rule.id = self.get_text(map, "Id", &format!("{at}.Id"));
        if let Some(id) = &rule.id
            && id.len() > 255
        {
            self.problem(&format!("{at}.Id"), "is longer than 255 characters");
        }
        match self
            .get_text(map, "Status", &format!("{at}.Status"))
            .as_deref()
        {
            Some("Enabled") => rule.enabled = true,
            Some("Disabled") => rule.enabled = false,
            Some(other) => self.problem(
                &format!("{at}.Status"),
                format!("{other:?} is not Enabled or Disabled"),
            ),
            None => {
                if !map.contains_key("Status") {
                    self.problem(&format!("{at}.Status"), "missing: Enabled or Disabled");
                }
            }
        }
        rule.prefix = self
            .get_text(map, "Prefix", &format!("{at}.Prefix"))
            .unwrap_or_default();
        rule.expiration_days =
            self.days(map, "ExpirationInDays", &format!("{at}.ExpirationInDays"));
        rule.expiration_date =
            self.get_text(map, "ExpirationDate", &format!("{at}.ExpirationDate"));
        if let Some(date) = &rule.expiration_date
            && chrono::DateTime::parse_from_rfc3339(date).is_err()
            && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err()
        {
            self.problem(
                &format!("{at}.ExpirationDate"),
                format!("{date:?} is not an ISO 8601 date"),
            );
        }
        if let Some(date) = &rule.expiration_date
            && let Ok(day) = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        {
            rule.expiration_date = Some(format!("{day}T00:00:00.000Z"));
        }
        rule.noncurrent_expiration_days = self.days(
            map,
            "NoncurrentVersionExpirationInDays",
            &format!("{at}.NoncurrentVersionExpirationInDays"),
        );
        if let Some(v) = map.get("NoncurrentVersionExpiration") {
            let field = format!("{at}.NoncurrentVersionExpiration");
            if let Some(inner) = self.mapping(v, &field) {
                rule.noncurrent_expiration_days =
                    self.days(inner, "NoncurrentDays", &format!("{field}.NoncurrentDays"));
            }
        }
        if let Some(v) = map.get("AbortIncompleteMultipartUpload") {
            let field = format!("{at}.AbortIncompleteMultipartUpload");
            if let Some(inner) = self.mapping(v, &field) {
                rule.abort_incomplete_multipart_days = self.days(
                    inner,
                    "DaysAfterInitiation",
                    &format!("{field}.DaysAfterInitiation"),
                );
            }
        }
        if rule.expiration_days.is_some() && rule.expiration_date.is_some() {
            self.problem(at, "ExpirationInDays and ExpirationDate exclude each other");
        }
        if rule.expiration_days.is_none()
            && rule.expiration_date.is_none()
            && rule.noncurrent_expiration_days.is_none()
            && rule.abort_incomplete_multipart_days.is_none()
        {
            self.problem(
                at,
                "has no action: give ExpirationInDays, ExpirationDate, NoncurrentVersionExpiration or AbortIncompleteMultipartUpload",
            );
            return None;
        }
        Some(rule)
    }

    fn cors_rule(&mut self, value: &Value, at: &str) -> Option<CorsRule> {
        let map = self.mapping(value, at)?;
        let rule = CorsRule {
            id: self.get_text(map, "Id", &format!("{at}.Id")),
            allowed_methods: self.strings(map, "AllowedMethods", &format!("{at}.AllowedMethods")),
            allowed_origins: self.strings(map, "AllowedOrigins", &format!("{at}.AllowedOrigins")),
            allowed_headers: self.strings(map, "AllowedHeaders", &format!("{at}.AllowedHeaders")),
            exposed_headers: self.strings(map, "ExposedHeaders", &format!("{at}.ExposedHeaders")),
            max_age: match map.get("MaxAge") {
                Some(v) => self
                    .number(v, &format!("{at}.MaxAge"))
                    .and_then(|n| u32::try_from(n).ok()),
                None => None,
            },
        };
        for key in map.keys().map(key_text) {
            if !matches!(
                key.as_str(),
                "Id" | "AllowedMethods"
                    | "AllowedOrigins"
                    | "AllowedHeaders"
                    | "ExposedHeaders"
                    | "MaxAge"
            ) {
                self.problem(&format!("{at}.{key}"), "unknown field of a CORS rule");
            }
        }
        if rule.allowed_methods.is_empty() {
            self.problem(
                &format!("{at}.AllowedMethods"),
                "missing: GET, PUT, HEAD, POST or DELETE",
            );
        }
        for method in &rule.allowed_methods {
            if !matches!(method.as_str(), "GET" | "PUT" | "HEAD" | "POST" | "DELETE") {
                self.problem(
                    &format!("{at}.AllowedMethods"),
                    format!("{method:?} is not GET, PUT, HEAD, POST or DELETE"),
                );
            }
        }
        if rule.allowed_origins.is_empty() {
            self.problem(&format!("{at}.AllowedOrigins"), "missing");
        }
        Some(rule)
    }
}

/// Why `name` is no valid DynamoDB table or index name.
fn check_table_name(name: &str) -> Result<(), &'static str> {
    if !(3..=255).contains(&name.len()) {
        return Err("must be 3 to 255 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("may contain only letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// Why `name` is no valid S3 bucket name (the general purpose bucket rules).
fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
    {
        return Err("may contain only lowercase letters, digits, '.' and '-'");
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Err("must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("must not be formatted as an IP address");
    }
    if name.starts_with("xn--") || name.starts_with("sthree-") {
        return Err("must not start with the reserved prefixes xn-- or sthree-");
    }
    if name.ends_with("-s3alias") || name.ends_with("--ol-s3") {
        return Err("must not end with the reserved suffixes -s3alias or --ol-s3");
    }
    Ok(())
}

/// The name of a table that gives no `TableName` (see the module's docs).
pub(crate) fn table_name_of(logical_id: &str) -> String {
    let mut name: String = logical_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(255)
        .collect();
    if name.len() < 3 {
        name.push_str("-table");
    }
    name
}

/// The name of a bucket that gives no `BucketName` (see the module's docs).
pub(crate) fn bucket_name_of(logical_id: &str) -> String {
    let lower: String = logical_id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = String::new();
    for c in lower.chars() {
        // No two adjacent periods.
        if !(c == '.' && name.ends_with('.')) {
            name.push(c);
        }
    }
    let mut name: String = name
        .trim_matches(|c| c == '-' || c == '.')
        .chars()
        .take(63)
        .collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    if name.len() < 3 {
        if name.is_empty() {
            name.push_str("esb");
        }
        name.push_str("-bucket");
    }
    name
}

/// Resolves `!Ref X` / `!GetAtt X.Attr` (and their `Ref` / `Fn::GetAtt` forms) against
/// `resources`: `Some(Ok(text))` when it is one of them, `Some(Err(why))` when it names
/// something it cannot resolve, `None` when `value` is neither.
pub(crate) fn resolve_intrinsic(
    resources: &Resources,
    value: &Value,
) -> Option<Result<String, String>> {
    match yaml::intrinsic(value)? {
        Intrinsic::Ref(inner) => {
            let Some(name) = inner.as_str() else {
                return Some(Err("!Ref takes a resource's logical id".into()));
            };
            Some(
                resources
                    .reference(name)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("!Ref {name}: no table or bucket {name:?} is defined")),
            )
        }
        Intrinsic::GetAtt(inner) => {
            let (name, attribute) = match get_att_parts(inner) {
                Some(parts) => parts,
                None => return Some(Err("!GetAtt takes Resource.Attribute".into())),
            };
            Some(resources.attribute(&name, &attribute).ok_or_else(|| {
                if resources.contains(&name) {
                    format!("!GetAtt {name}.{attribute}: {name} has no attribute {attribute:?}")
                } else {
                    format!("!GetAtt {name}.{attribute}: no table or bucket {name:?} is defined")
                }
            }))
        }
        Intrinsic::Sub(_) => None,
    }
}

/// `X.Attr` or `[X, Attr]` as `(X, Attr)`.
pub(crate) fn get_att_parts(value: &Value) -> Option<(String, String)> {
    match value {
        Value::String(s) => {
            let (name, attribute) = s.split_once('.')?;
            Some((name.to_owned(), attribute.to_owned()))
        }
        Value::Sequence(items) if items.len() == 2 => {
            Some((items[0].as_str()?.to_owned(), items[1].as_str()?.to_owned()))
        }
        _ => None,
    }
}

/// Reads the `resources:` section of `functions.yml`, then resolves `!Ref` / `!GetAtt` in
/// the environments of `defaults` and every function (in place), reporting what does not
/// resolve.
pub(crate) fn read_yaml_section(
    root: &mut Mapping,
    report: &mut Report<'_>,
    warnings: &mut Vec<Problem>,
    region: String,
    account: String,
) -> Resources {
    let mut reader = ResourceReader {
        report,
        warnings,
        resolve: &crate::yaml::text_value,
        section: "resources",
        region,
        account,
        resources: Resources::default(),
    };
    if let Some(section) = root.get("resources") {
        match section {
            Value::Mapping(map) => {
                for (key, value) in map {
                    let id = key_text(key);
                    if !reader.resource(&id, value) {
                        let kind = value
                            .get("Type")
                            .map(value_debug)
                            .unwrap_or_else(|| "nothing".into());
                        reader.report.push(
                            &format!("resources.{id}"),
                            "Type",
                            format!("{kind} is not AWS::DynamoDB::Table, AWS::Serverless::SimpleTable or AWS::S3::Bucket"),
                        );
                    }
                }
            }
            Value::Null => {}
            other => reader.report.push(
                "",
                "resources",
                format!("expected a mapping, found {}", value_debug(other)),
            ),
        }
    }
    let resources = reader.finish();
    let mut environments: Vec<(String, &mut Value)> = Vec::new();
    for (key, value) in root.iter_mut() {
        match key.as_str() {
            Some("defaults") => {
                if let Some(env) = value.get_mut("environment") {
                    environments.push(("defaults".into(), env));
                }
            }
            Some("functions") => {
                if let Value::Mapping(functions) = value {
                    for (name, function) in functions.iter_mut() {
                        let item = format!("functions.{}", key_text(name));
                        if let Some(env) = function.get_mut("environment") {
                            environments.push((item, env));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for (item, env) in environments {
        let Value::Mapping(env) = env else { continue };
        for (key, value) in env.iter_mut() {
            match resolve_intrinsic(&resources, value) {
                Some(Ok(text)) => *value = Value::String(text),
                Some(Err(why)) => {
                    report.push(&item, &format!("environment.{}", key_text(key)), why);
                    *value = Value::String(String::new());
                }
                None => {}
            }
        }
    }
    resources
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Error};

    fn sam(resources: &str) -> Result<Config, Error> {
        let template = format!(
            "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      PackageType: Image\n      ImageUri: fn:latest\n      Environment:\n        Variables:\n          TABLE: !Ref Items\n          TABLE_ARN: !GetAtt Items.Arn\n          STREAM: !GetAtt Items.StreamArn\n          BUCKET: !Ref Files\n          BUCKET_ARN: {{\"Fn::GetAtt\": [Files, Arn]}}\n          SUBBED: !Sub \"${{Items}}/${{Files.Arn}}\"\n          POLICY_ARN: !Sub \"arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/${{Items}}/index/*\"\n{resources}"
        );
        let env = |name: &str| match name {
            "AWS_REGION" => Some("eu-west-1".to_owned()),
            "AWS_ACCOUNT_ID" => Some("111122223333".to_owned()),
            _ => None,
        };
        Config::from_sam_str(&template, &env)
    }

    const GOOD: &str = r#"
  Items:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: items-table
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - { AttributeName: pk, AttributeType: S }
        - { AttributeName: sk, AttributeType: S }
        - { AttributeName: gsi_pk, AttributeType: S }
        - { AttributeName: lsi_sk, AttributeType: N }
      KeySchema:
        - { AttributeName: pk, KeyType: HASH }
        - { AttributeName: sk, KeyType: RANGE }
      GlobalSecondaryIndexes:
        - IndexName: by-gsi
          KeySchema: [{ AttributeName: gsi_pk, KeyType: HASH }]
          Projection: { ProjectionType: ALL }
      LocalSecondaryIndexes:
        - IndexName: by-lsi
          KeySchema:
            - { AttributeName: pk, KeyType: HASH }
            - { AttributeName: lsi_sk, KeyType: RANGE }
          Projection: { ProjectionType: INCLUDE, NonKeyAttributes: [a, b] }
      StreamSpecification: { StreamViewType: NEW_AND_OLD_IMAGES }
  Simple:
    Type: AWS::Serverless::SimpleTable
  Keyed:
    Type: AWS::Serverless::SimpleTable
    Properties:
      PrimaryKey: { Name: userId, Type: Number }
      ProvisionedThroughput: { ReadCapacityUnits: 2, WriteCapacityUnits: 3 }
  Files:
    Type: AWS::S3::Bucket
    Properties:
      LifecycleConfiguration:
        Rules:
          - { Id: expire-tmp, Status: Enabled, Prefix: tmp/, ExpirationInDays: 7 }
      CorsConfiguration:
        CorsRules:
          - { AllowedMethods: [GET, PUT], AllowedOrigins: ["*"], MaxAge: 300 }
"#;

    fn problems(result: Result<Config, Error>) -> Vec<String> {
        match result {
            Err(Error::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn reads_tables_simple_tables_and_buckets() {
        let config = sam(GOOD).unwrap();
        let r = &config.resources;
        assert_eq!(r.tables.len(), 3);
        let items = &r.tables[0];
        assert_eq!(items.name, "items-table");
        assert_eq!(
            items.arn,
            "arn:aws:dynamodb:eu-west-1:111122223333:table/items-table"
        );
        assert_eq!(items.key_schema.len(), 2);
        assert_eq!(items.key_schema[1].key_type, KeyType::Range);
        assert_eq!(items.global_secondary_indexes[0].name, "by-gsi");
        assert_eq!(
            items.local_secondary_indexes[0].non_key_attributes,
            ["a", "b"]
        );
        assert_eq!(items.billing_mode, BillingMode::PayPerRequest);
        assert_eq!(
            items.stream_view_type,
            Some(StreamViewType::NewAndOldImages)
        );
        let simple = &r.tables[1];
        assert_eq!(simple.name, "Simple");
        assert_eq!(simple.key_schema[0].attribute_name, "id");
        assert_eq!(simple.attribute_definitions[0].attribute_type, "S");
        assert_eq!(simple.billing_mode, BillingMode::PayPerRequest);
        let keyed = &r.tables[2];
        assert_eq!(keyed.attribute_definitions[0].attribute_name, "userId");
        assert_eq!(keyed.attribute_definitions[0].attribute_type, "N");
        assert_eq!(
            keyed.provisioned_throughput,
            Some(Throughput {
                read_capacity_units: 2,
                write_capacity_units: 3
            })
        );
        let files = &r.buckets[0];
        assert_eq!(files.name, "files");
        assert_eq!(files.lifecycle_rules[0].expiration_days, Some(7));
        assert_eq!(files.lifecycle_rules[0].prefix, "tmp/");
        assert!(files.lifecycle_rules[0].enabled);
        assert_eq!(files.cors_rules[0].allowed_methods, ["GET", "PUT"]);
        assert_eq!(files.cors_rules[0].max_age, Some(300));
        assert!(
            !config
                .warnings
                .iter()
                .any(|w| w.item.starts_with("Resources.Items")),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn function_environment_resolves_refs_and_arns() {
        let config = sam(GOOD).unwrap();
        let env = &config.functions["Fn"].environment;
        assert_eq!(env["TABLE"], "items-table");
        assert_eq!(
            env["TABLE_ARN"],
            "arn:aws:dynamodb:eu-west-1:111122223333:table/items-table"
        );
        assert!(
            env["STREAM"]
                .starts_with("arn:aws:dynamodb:eu-west-1:111122223333:table/items-table/stream/"),
            "{}",
            env["STREAM"]
        );
        assert_eq!(env["BUCKET"], "files");
        assert_eq!(env["BUCKET_ARN"], "arn:aws:s3:::files");
        assert_eq!(env["SUBBED"], "items-table/arn:aws:s3:::files");
        assert_eq!(
            env["POLICY_ARN"],
            "arn:aws:dynamodb:eu-west-1:111122223333:table/items-table/index/*"
        );
    }

    /// `GOOD` with `from` replaced by `to` is refused with a problem holding each of `expected`.
    fn assert_problem(from: &str, to: &str, expected: &[&str]) {
        let template = GOOD.replace(from, to);
        assert_ne!(template, GOOD, "{from:?} is not in the template");
        let found = problems(sam(&template));
        assert!(
            found
                .iter()
                .any(|p| expected.iter().all(|part| p.contains(part))),
            "no problem holds {expected:?}: {found:?}"
        );
    }

    #[test]
    fn invalid_key_schemas_name_the_resource() {
        assert_problem(
            "KeyType: RANGE }\n      GlobalSecondary",
            "KeyType: HASH }\n      GlobalSecondary",
            &["Resources.Items: KeySchema: has 2 HASH"],
        );
        assert_problem(
            "        - { AttributeName: gsi_pk, AttributeType: S }\n",
            "",
            &[
                "Resources.Items: GlobalSecondaryIndexes[0].KeySchema: key attribute \"gsi_pk\" is missing from AttributeDefinitions",
            ],
        );
        assert_problem(
            "        - { AttributeName: lsi_sk, AttributeType: N }\n",
            "        - { AttributeName: lsi_sk, AttributeType: N }\n        - { AttributeName: extra, AttributeType: S }\n",
            &["AttributeDefinitions[4]", "no key attribute"],
        );
        assert_problem(
            "      BillingMode: PAY_PER_REQUEST\n",
            "",
            &["Resources.Items: ProvisionedThroughput: missing"],
        );
    }

    #[test]
    fn bad_buckets_and_rules_are_problems() {
        assert_problem(
            "      LifecycleConfiguration:",
            "      BucketName: My_Bucket\n      LifecycleConfiguration:",
            &["Resources.Files: BucketName: \"My_Bucket\" may contain only lowercase"],
        );
        assert_problem(
            "Status: Enabled",
            "Status: On",
            &["Rules[0].Status: \"On\" is not Enabled or Disabled"],
        );
        assert_problem("[GET, PUT]", "[GET, PATCH]", &["\"PATCH\" is not GET"]);
        assert_problem(
            "ExpirationInDays: 7",
            "ExpirationInDays: 0",
            &["ExpirationInDays: 0 is not a number of days"],
        );
    }

    #[test]
    fn unknown_attribute_of_a_resource_is_left_out_not_guessed() {
        let template = GOOD.to_owned();
        let config = sam(&template.replace(
            "StreamSpecification: { StreamViewType: NEW_AND_OLD_IMAGES }",
            "BillingMode: PAY_PER_REQUEST",
        ))
        .err();
        // Duplicate key BillingMode is a YAML error: the template must still be reported.
        assert!(config.is_some());
        let no_stream = GOOD.replace(
            "      StreamSpecification: { StreamViewType: NEW_AND_OLD_IMAGES }\n",
            "",
        );
        let config = sam(&no_stream).unwrap();
        assert!(!config.functions["Fn"].environment.contains_key("STREAM"));
    }

    #[test]
    fn derived_names_are_valid() {
        assert_eq!(table_name_of("Items"), "Items");
        assert_eq!(table_name_of("T"), "T-table");
        assert_eq!(table_name_of("my table"), "my-table");
        assert_eq!(bucket_name_of("MyFiles"), "myfiles");
        assert_eq!(bucket_name_of("A"), "a-bucket");
        assert_eq!(bucket_name_of("-_x..y_-"), "x.y");
        assert_eq!(bucket_name_of(&"B".repeat(100)).len(), 63);
        for id in ["A", "MyFiles", "-_x..y_-", "ab", "x--", "..", "Files-2024"] {
            check_bucket_name(&bucket_name_of(id)).unwrap();
            check_table_name(&table_name_of(id)).unwrap();
        }
    }

    #[test]
    fn functions_yml_resources_in_the_same_shape() {
        let functions = r#"
resources:
  Orders:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{ AttributeName: id, AttributeType: S }]
      KeySchema: [{ AttributeName: id, KeyType: HASH }]
  Uploads:
    Type: AWS::S3::Bucket
defaults:
  environment: { BUCKET: !Ref Uploads }
functions:
  f:
    command: [./f]
    environment:
      TABLE: !Ref Orders
      TABLE_ARN: !GetAtt Orders.Arn
"#;
        let config = Config::from_yaml_str(functions, "routes: []\n", &|_| None).unwrap();
        assert_eq!(config.resources.tables[0].name, "Orders");
        assert_eq!(config.resources.buckets[0].name, "uploads");
        let env = &config.functions["f"].environment;
        assert_eq!(env["TABLE"], "Orders");
        assert_eq!(env["BUCKET"], "uploads");
        assert_eq!(
            env["TABLE_ARN"],
            format!("arn:aws:dynamodb:{DEFAULT_REGION}:{DEFAULT_ACCOUNT_ID}:table/Orders")
        );
        let bad = functions.replace("!Ref Orders", "!Ref Nope");
        let found = problems(Config::from_yaml_str(&bad, "routes: []\n", &|_| None));
        assert!(
            found.iter().any(
                |p| p.contains("functions.f: environment.TABLE: !Ref Nope: no table or bucket")
            ),
            "{found:?}"
        );
        let bad = functions.replace("KeyType: HASH", "KeyType: RANGE");
        let found = problems(Config::from_yaml_str(&bad, "routes: []\n", &|_| None));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("functions.yml: resources.Orders: KeySchema:")),
            "{found:?}"
        );
    }
}
