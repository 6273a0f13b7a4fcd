//! The variables every function gets to find the box's companions and the gateway.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use esb_router::{Endpoint, Services};

/// What functions are told besides the services: the gateway's URL as they reach it and
/// where logs go. Part of [`GatewayConfig`](crate::GatewayConfig).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FunctionWiring {
    /// The gateway's URL as functions reach it (`AWS_ENDPOINT_URL_LAMBDA`,
    /// `GATEWAY_INTERNAL_URL`); `None`: the address it listens on.
    pub internal_url: Option<Endpoint>,
    /// `VICTORIALOGS_URL`, when logs go to VictoriaLogs.
    pub victorialogs_url: Option<String>,
    /// Endpoint rewrites for sandboxes that cannot reach the configured address (a loopback
    /// service seen from a containerd sandbox): `host:port` as configured -> as reachable.
    pub reachable: BTreeMap<String, String>,
    /// The host's address as sandboxes behind a bridge reach it (containerd with a CNI
    /// network): loopback endpoints, the gateway's own included, are forwarded from there.
    pub sandbox_host: Option<IpAddr>,
}

impl FunctionWiring {
    /// Sets the gateway's URL as functions reach it.
    pub fn internal_url(mut self, url: Endpoint) -> Self {
        self.internal_url = Some(url);
        self
    }

    /// Sets `VICTORIALOGS_URL`.
    pub fn victorialogs_url(mut self, url: impl Into<String>) -> Self {
        self.victorialogs_url = Some(url.into());
        self
    }

    /// Forwards loopback endpoints from `host`, the host's address on the sandboxes' bridge.
    pub fn sandbox_host(mut self, host: IpAddr) -> Self {
        self.sandbox_host = Some(host);
        self
    }

    /// The `host:port` of every endpoint a sandbox behind a bridge cannot reach as written:
    /// loopback services, and the gateway on `local` (or its internal URL) when loopback.
    pub(crate) fn loopback_authorities(
        &self,
        services: &Services,
        local: SocketAddr,
    ) -> Vec<String> {
        let mut found: Vec<String> = services
            .iter()
            .map(|(_, service)| &service.endpoint)
            .chain(self.internal_url.as_ref())
            .filter(|endpoint| super::forward::is_loopback(endpoint.host()))
            .map(|endpoint| format!("{}:{}", endpoint.host(), endpoint.port()))
            .collect();
        if self.internal_url.is_none() {
            found.push(gateway_authority(local));
        }
        found.sort();
        found.dedup();
        found
    }

    /// Makes functions use `to` (`host:port`) wherever an endpoint says `from`.
    pub fn reachable_at(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.reachable.insert(from.into(), to.into());
        self
    }

    /// The variables of `services` and of a gateway listening on `local` with `scheme`:
    /// under a function's own `environment`, which wins.
    pub fn variables(
        &self,
        services: &Services,
        local: SocketAddr,
        scheme: &str,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if let Some(s3) = &services.s3 {
            let url = self.reach(&s3.endpoint);
            env.insert("AWS_ENDPOINT_URL_S3".to_owned(), url.clone());
            env.insert("S3_ENDPOINT".to_owned(), url);
        }
        if let Some(dynamodb) = &services.dynamodb {
            let url = self.reach(&dynamodb.endpoint);
            env.insert("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), url.clone());
            env.insert("DYNAMODB_ENDPOINT".to_owned(), url);
        }
        // The keys of the services, when they have some: S3's first (SDKs sign every
        // service's requests with the one pair of variables).
        if let Some((access, secret)) = services.iter().find_map(|(_, service)| {
            Some((service.access_key.as_ref()?, service.secret_key.as_ref()?))
        }) {
            env.insert("AWS_ACCESS_KEY_ID".to_owned(), access.clone());
            env.insert("AWS_SECRET_ACCESS_KEY".to_owned(), secret.clone());
        }
        let gateway = match &self.internal_url {
            Some(url) => self.reach(url),
            None => {
                let authority = gateway_authority(local);
                let authority = self.reachable.get(&authority).unwrap_or(&authority);
                format!("{scheme}://{authority}")
            }
        };
        env.insert("AWS_ENDPOINT_URL_LAMBDA".to_owned(), gateway.clone());
        env.insert("GATEWAY_INTERNAL_URL".to_owned(), gateway);
        if let Some(url) = &self.victorialogs_url {
            env.insert("VICTORIALOGS_URL".to_owned(), url.clone());
        }
        env
    }

    /// `endpoint` as functions reach it: its `host:port` rewritten when it has a rewrite.
    fn reach(&self, endpoint: &Endpoint) -> String {
        let text = endpoint.as_str();
        let authority = format!("{}:{}", endpoint.host(), endpoint.port());
        match self.reachable.get(&authority) {
            Some(to) => {
                let scheme = endpoint.uri().scheme_str().unwrap_or("http");
                let path = endpoint
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .filter(|p| *p != "/")
                    .unwrap_or("");
                format!("{scheme}://{to}{path}")
            }
            None => text,
        }
    }
}

/// The gateway's `host:port` as a local client reaches it: loopback for an unspecified
/// address.
fn gateway_authority(local: SocketAddr) -> String {
    let host = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(host, local.port()).to_string()
}

/// A one-line warning when two services have key pairs that differ: functions get one
/// pair (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, the first service's), with which
/// AWS SDKs sign every service's requests. Names the services, never the keys.
pub(crate) fn key_pair_warning(services: &Services) -> Option<String> {
    let mut pairs = services.iter().filter_map(|(name, service)| {
        Some((
            name,
            service.access_key.as_ref()?,
            service.secret_key.as_ref()?,
        ))
    });
    let (used, access, secret) = pairs.next()?;
    let other = pairs
        .filter(|(_, a, s)| a != &access || s != &secret)
        .map(|(name, _, _)| name)
        .collect::<Vec<_>>();
    if other.is_empty() {
        return None;
    }
    Some(format!(
        "services {used} and {} have different keys: functions get {used}'s as \
         AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, and AWS SDKs sign every service's \
         requests with that one pair",
        other.join(", ")
    ))
}

/// `env` under `own`: a function's own variables win.
pub fn under(
    env: &BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged = env.clone();
    merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

#[cfg(test)]
mod tests {
    use esb_router::ServiceConfig;

    use super::*;

    fn services() -> Services {
        let mut services = Services::default();
        let mut s3 = ServiceConfig::new(Endpoint::parse("http://127.0.0.1:9000").unwrap());
        s3.access_key = Some("ak".into());
        s3.secret_key = Some("sk".into());
        services.s3 = Some(s3);
        services.dynamodb = Some(ServiceConfig::new(
            Endpoint::parse("http://localhost:8001/db").unwrap(),
        ));
        services
    }

    #[test]
    fn every_variable_is_set_from_services_and_the_listener() {
        let wiring = FunctionWiring::default().victorialogs_url("http://127.0.0.1:9428");
        let env = wiring.variables(&services(), "0.0.0.0:8080".parse().unwrap(), "http");
        assert_eq!(env["AWS_ENDPOINT_URL_S3"], "http://127.0.0.1:9000");
        assert_eq!(env["S3_ENDPOINT"], "http://127.0.0.1:9000");
        assert_eq!(env["AWS_ENDPOINT_URL_DYNAMODB"], "http://localhost:8001/db");
        assert_eq!(env["DYNAMODB_ENDPOINT"], "http://localhost:8001/db");
        assert_eq!(env["AWS_ENDPOINT_URL_LAMBDA"], "http://127.0.0.1:8080");
        assert_eq!(env["GATEWAY_INTERNAL_URL"], "http://127.0.0.1:8080");
        assert_eq!(env["VICTORIALOGS_URL"], "http://127.0.0.1:9428");
        assert_eq!(env["AWS_ACCESS_KEY_ID"], "ak");
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "sk");
    }

    #[test]
    fn rewrites_apply_to_services_and_gateway_and_own_variables_win() {
        let wiring = FunctionWiring::default()
            .reachable_at("127.0.0.1:9000", "10.88.0.1:40000")
            .reachable_at("localhost:8001", "10.88.0.1:40001")
            .reachable_at("127.0.0.1:8080", "10.88.0.1:40002");
        let env = wiring.variables(&services(), "127.0.0.1:8080".parse().unwrap(), "http");
        assert_eq!(env["AWS_ENDPOINT_URL_S3"], "http://10.88.0.1:40000");
        assert_eq!(
            env["AWS_ENDPOINT_URL_DYNAMODB"],
            "http://10.88.0.1:40001/db"
        );
        assert_eq!(env["AWS_ENDPOINT_URL_LAMBDA"], "http://10.88.0.1:40002");
        let own = BTreeMap::from([("AWS_ENDPOINT_URL_S3".to_owned(), "http://mine".to_owned())]);
        let merged = under(&env, &own);
        assert_eq!(merged["AWS_ENDPOINT_URL_S3"], "http://mine");
        assert_eq!(merged["S3_ENDPOINT"], "http://10.88.0.1:40000");
    }

    #[test]
    fn different_key_pairs_are_warned_about_without_the_keys() {
        let mut services = services();
        assert_eq!(key_pair_warning(&services), None, "dynamodb has no keys");
        let mut dynamodb = services.dynamodb.clone().unwrap();
        dynamodb.access_key = Some("ak".into());
        dynamodb.secret_key = Some("sk".into());
        services.dynamodb = Some(dynamodb.clone());
        assert_eq!(key_pair_warning(&services), None, "the same pair");
        dynamodb.access_key = Some("dynamo-id".into());
        dynamodb.secret_key = Some("other-secret".into());
        services.dynamodb = Some(dynamodb);
        let warning = key_pair_warning(&services).unwrap();
        assert!(
            warning.starts_with("services s3 and dynamodb have different keys: functions get s3's"),
            "{warning}"
        );
        for secret in ["other-secret", "dynamo-id"] {
            assert!(!warning.contains(secret), "{warning}");
        }
        assert!(!warning.contains('\n'));
    }

    #[test]
    fn without_services_only_the_gateway_is_set() {
        let env = FunctionWiring::default().variables(
            &Services::default(),
            "[::]:9".parse().unwrap(),
            "https",
        );
        assert_eq!(
            env,
            BTreeMap::from([
                (
                    "AWS_ENDPOINT_URL_LAMBDA".to_owned(),
                    "https://[::1]:9".to_owned()
                ),
                (
                    "GATEWAY_INTERNAL_URL".to_owned(),
                    "https://[::1]:9".to_owned()
                ),
            ])
        );
    }
}
