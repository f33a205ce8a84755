//! The one configuration struct, loaded once: built-in defaults, then `rendermart.toml`,
//! then `RENDERMART_*` environment variables (nested keys with `__`, e.g.
//! `RENDERMART_IDENTITY__SESSION_TTL_SECS`), then command-line flags. Nothing else in the
//! code reads the environment.

use std::{collections::BTreeSet, fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use figment::{
    providers::{Format, Serialized, Toml},
    Figment,
};
use rendermart_identity::IdentityConfig;
use rendermart_platform::{
    http::{EdgeConfig, ServeConfig, TrustedProxies},
    telemetry::LogFormat,
};
use serde::{Deserialize, Serialize};

/// A service this binary can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Identity,
    Web,
}

impl ServiceName {
    pub const ALL: &'static [ServiceName] = &[ServiceName::Identity, ServiceName::Web];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Identity => "identity",
            ServiceName::Web => "web",
        }
    }
}

impl FromStr for ServiceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|n| n.as_str() == s.trim())
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|n| n.as_str()).collect();
                format!(
                    "unknown service {s:?} (known: {}, or all)",
                    known.join(", ")
                )
            })
    }
}

/// Which services run in this process: `all` or a comma-separated list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceSet(BTreeSet<ServiceName>);

impl ServiceSet {
    pub fn all() -> Self {
        Self(ServiceName::ALL.iter().copied().collect())
    }

    pub fn contains(&self, name: ServiceName) -> bool {
        self.0.contains(&name)
    }

    pub fn iter(&self) -> impl Iterator<Item = ServiceName> + '_ {
        self.0.iter().copied()
    }
}

impl FromStr for ServiceSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "all" {
            return Ok(Self::all());
        }
        let set = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(ServiceName::from_str)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if set.is_empty() {
            return Err("name at least one service, or all".into());
        }
        Ok(Self(set))
    }
}

impl TryFrom<String> for ServiceSet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ServiceSet> for String {
    fn from(s: ServiceSet) -> Self {
        s.to_string()
    }
}

impl fmt::Display for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::all() {
            return f.write_str("all");
        }
        let names: Vec<_> = self.iter().map(|n| n.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// Everything a RenderMart process needs to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address to serve HTTP on.
    pub addr: SocketAddr,
    /// Separate address for `/healthz`, `/readyz` and `/metrics`; when set, `/metrics` is
    /// served only there (the public port answers 404 for it).
    pub ops_addr: Option<SocketAddr>,
    /// Where the embedded default keeps SQLite files, the local bus and objects.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; unset means SQLite files under `data_dir`.
    pub database_url: Option<String>,
    /// Redis URL for shared rate-limit counters; unset means in-process counters.
    pub redis_url: Option<String>,
    /// RabbitMQ URL (`amqp://…`); unset means the in-process bus.
    pub bus: Option<String>,
    /// Exchange (and queue-name prefix) on RabbitMQ; Redis key prefix.
    pub namespace: String,
    pub services: ServiceSet,
    /// `auto` (pretty on a terminal, JSON otherwise), `json` or `pretty`.
    pub log_format: LogFormat,
    /// Log filter, `RUST_LOG` syntax.
    pub log_level: String,
    /// OTLP/HTTP endpoint for traces, e.g. `http://otel-collector:4318`.
    pub otlp_endpoint: Option<String>,
    /// Mark cookies `Secure` (set it when served over HTTPS).
    pub cookie_secure: bool,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    /// Time a client has to send a request's headers (slowloris bound).
    pub header_read_timeout_secs: u64,
    /// Open connections at most per listener; beyond, new ones wait.
    pub max_connections: usize,
    /// Proxies (CIDRs) whose `X-Forwarded-For`/`-Proto` are believed; empty: none.
    pub trusted_proxies: TrustedProxies,
    /// `Strict-Transport-Security` max-age sent on secure requests; 0 never sends it.
    pub hsts_max_age_secs: u64,
    pub identity: IdentityConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".parse().expect("static address"),
            ops_addr: None,
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            bus: None,
            namespace: "rendermart".into(),
            services: ServiceSet::all(),
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            otlp_endpoint: None,
            cookie_secure: false,
            request_timeout_secs: 30,
            body_limit_bytes: 64 * 1024,
            header_read_timeout_secs: ServeConfig::default().header_read_timeout.as_secs(),
            max_connections: ServeConfig::default().max_connections,
            trusted_proxies: TrustedProxies::default(),
            hsts_max_age_secs: EdgeConfig::default().hsts_max_age.as_secs(),
            identity: IdentityConfig::default(),
        }
    }
}

/// Values given on the command line; `None` means "not given here".
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    /// Loads defaults ← `config_file` (if it exists) ← `env` (`RENDERMART_*` pairs) ← flags.
    /// The environment is passed in, so tests can load configuration without touching it.
    pub fn load(
        config_file: &std::path::Path,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, Box<figment::Error>> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("RENDERMART_") && !k.starts_with("RENDERMART_TEST_"))
            .collect();
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if config_file.exists() {
            figment = figment.merge(Toml::file(config_file));
        }
        figment
            .merge(EnvPairs(env))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
    }

    /// The configuration as TOML with every secret (URL passwords) redacted.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = shown.database_url.as_deref().map(redact_url);
        shown.redis_url = shown.redis_url.as_deref().map(redact_url);
        shown.bus = shown.bus.as_deref().map(redact_url);
        shown.otlp_endpoint = shown.otlp_endpoint.as_deref().map(redact_url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// `scheme://user:password@host/…` → `scheme://user:***@host/…`; also hides `password=` query values.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find("password=") {
        let start = q + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
    }
    out
}

/// `RENDERMART_*` variables as a figment provider, from an explicit list rather than the
/// process (figment's own `Env` always reads the process): `__` nests, keys lower-case.
struct EnvPairs(Vec<(String, String)>);

impl figment::Provider for EnvPairs {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.0 {
            let Some(key) = key.strip_prefix("RENDERMART_") else {
                continue;
            };
            let path: Vec<String> = key.split("__").map(|k| k.to_ascii_lowercase()).collect();
            let value: figment::value::Value =
                value.parse().unwrap_or_else(|_| value.as_str().into());
            insert_path(&mut dict, &path, value);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_the_embedded_setup() {
        let s = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database_url, None);
        assert_eq!(s.services, ServiceSet::all());
        assert_eq!(s.log_format, LogFormat::Auto);
        assert_eq!(s.ops_addr, None);
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.header_read_timeout_secs, 10);
        assert_eq!(s.max_connections, 10_000);
    }

    #[test]
    fn edge_settings_load_from_the_environment() {
        let s = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[
                ("RENDERMART_OPS_ADDR", "127.0.0.1:9090"),
                ("RENDERMART_TRUSTED_PROXIES", "10.0.0.0/8,192.168.0.0/16"),
                ("RENDERMART_LOG_FORMAT", "json"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.ops_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(s.trusted_proxies.to_string(), "10.0.0.0/8,192.168.0.0/16");
        assert_eq!(s.log_format, LogFormat::Json);
        let err = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[("RENDERMART_TRUSTED_PROXIES", "10.0.0.0/99")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/99"), "{err}");
    }

    #[test]
    fn file_then_env_then_flags_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rendermart.toml");
        std::fs::write(
            &file,
            "addr = \"0.0.0.0:9000\"\nlog_format = \"pretty\"\nservices = \"identity\"\n[identity]\nsession_ttl_secs = 60\n",
        )
        .unwrap();
        let s = Settings::load(&file, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(s.addr.port(), 9000);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert_eq!(s.identity.session_ttl_secs, 60);
        assert!(!s.services.contains(ServiceName::Web));

        let e = env(&[
            ("RENDERMART_ADDR", "0.0.0.0:9100"),
            ("RENDERMART_SERVICES", "identity,web"),
            ("RENDERMART_IDENTITY__SESSION_TTL_SECS", "120"),
            ("RENDERMART_TEST_DATABASE_URL", "ignored"),
            ("OTHER", "ignored"),
        ]);
        let s = Settings::load(&file, e.clone(), &Overrides::default()).unwrap();
        assert_eq!(s.addr.port(), 9100);
        assert_eq!(s.identity.session_ttl_secs, 120);
        assert_eq!(s.services, ServiceSet::all());

        let flags = Overrides {
            addr: Some("127.0.0.1:9200".parse().unwrap()),
            ..Overrides::default()
        };
        let s = Settings::load(&file, e, &flags).unwrap();
        assert_eq!(s.addr.port(), 9200);
    }

    #[test]
    fn bad_values_are_reported_not_defaulted() {
        let err = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[("RENDERMART_SERVICES", "identity,nope")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown service"), "{err}");
        assert!(Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[("RENDERMART_ADDR", "not an address")]),
            &Overrides::default()
        )
        .is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/rm"),
            "postgres://app:***@db:5432/rm"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379"),
            "redis://:***@cache:6379"
        );
        assert_eq!(redact_url("amqp://guest@mq/%2f"), "amqp://guest@mq/%2f");
        assert_eq!(
            redact_url("postgres://db/rm?user=a&password=x&sslmode=require"),
            "postgres://db/rm?user=a&password=***&sslmode=require"
        );
        let s = Settings {
            database_url: Some("postgres://app:s3cret@db/rm".into()),
            bus: Some("amqp://u:hunter2@mq/%2f".into()),
            ..Settings::default()
        };
        let shown = s.redacted_toml();
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
