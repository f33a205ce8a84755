//! The identity service: sign-up, log-in, sessions, API tokens and authentication.
//!
//! Every rule that is not about the shape of one input lives here: emails are unique,
//! a failed log-in looks the same whether or not the email exists (same answer, and a
//! password hash is verified either way so timing does not tell), password hashing runs a
//! bounded number at a time, log-ins follow the policy in `docs/login-policy.md` (limited
//! per address and per account and address; an account under attack is slowed for
//! strangers, never locked for its owner), a session is rotated at log-in, and a user's
//! registration and its `UserRegistered` event commit together.

use std::sync::Arc;

use async_trait::async_trait;
use rendermart_identity_api::{
    ClientMeta, IdentityApi, IdentityError, LogIn, NewSession, NewToken, SignUp, TokenInfo, User,
    UserRegistered,
};
use rendermart_platform::{
    auth::{AuthCache, AuthError, Authenticator, Credential, Principal, Role, Via},
    clock,
    db::{is_unique_violation, Db},
    events::Envelope,
    outbox,
    ratelimit::{Decision, Limit, RateLimiter},
};

use crate::{
    config::IdentityConfig,
    domain::{DisplayName, Email, Password, SessionId, TokenId, TokenName, UserId},
    secrets, store,
};

/// How often at most a token's `last_used_at` is written (avoids a write per request).
const TOKEN_TOUCH_INTERVAL_MICROS: i64 = 60 * 1_000_000;

/// How long a browser is remembered as one the account has signed in on.
const DEVICE_TTL_MICROS: i64 =
    rendermart_identity_api::device::MAX_AGE_DAYS * 24 * 3600 * 1_000_000;

pub struct Identity {
    db: Db,
    limiter: Arc<dyn RateLimiter>,
    config: IdentityConfig,
    /// Every password hash and check goes through it: a bounded number at once.
    hasher: secrets::Hasher,
    /// A real argon2id hash of a random password, verified when the email is unknown so
    /// that a failed log-in costs the same either way.
    decoy_hash: String,
    /// Credentials recently found valid. Ending a session or revoking a token here drops
    /// it at once; other replicas drop it within the cache's time to live.
    cache: AuthCache,
    /// Users recently read (`GET /api/v1/me` on every API call of a client), for the same
    /// short time: nothing changes a user's row yet but the admin CLI.
    users: UserCache,
}

/// A bounded, short-lived cache of users by id.
struct UserCache {
    ttl: std::time::Duration,
    capacity: usize,
    entries: std::sync::Mutex<std::collections::HashMap<UserId, (std::time::Instant, User)>>,
}

impl UserCache {
    fn get(&self, id: UserId) -> Option<User> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, user)| user.clone())
    }

    fn put(&self, user: &User) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(user.id, (std::time::Instant::now(), user.clone()));
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("db", &self.db).finish()
    }
}

impl Identity {
    pub async fn new(
        db: Db,
        limiter: Arc<dyn RateLimiter>,
        config: IdentityConfig,
    ) -> anyhow::Result<Self> {
        let hasher = secrets::Hasher::new(
            config.hash_concurrency(),
            config.hash_queue,
            config.hash_wait(),
        );
        let decoy_hash = hasher.hash(secrets::random_secret()).await?;
        let cache = AuthCache::new(config.auth_cache_ttl(), config.auth_cache_capacity);
        let users = UserCache {
            ttl: config.auth_cache_ttl(),
            capacity: config.auth_cache_capacity,
            entries: Default::default(),
        };
        let identity = Self {
            db,
            limiter,
            config,
            hasher,
            decoy_hash,
            cache,
            users,
        };
        identity.fill_email_keys().await?;
        Ok(identity)
    }

    /// Gives users registered before look-alike keys existed theirs. A user whose key is
    /// already taken by another keeps none (and is logged): both accounts keep working.
    async fn fill_email_keys(&self) -> anyhow::Result<()> {
        let mut conn = self.db.pool().acquire().await?;
        loop {
            let batch = store::users_without_email_key(&mut conn, 500).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut progressed = false;
            for (id, email) in batch {
                let key = match Email::parse(&email) {
                    Ok(email) => email.lookalike_key(),
                    // Stored before today's rules: its own text keeps it unique.
                    Err(_) => format!("legacy:{email}"),
                };
                match store::set_email_key(&mut conn, id, &key).await {
                    Ok(()) => progressed = true,
                    Err(e) if is_unique_violation(&e) => {
                        tracing::warn!(user_id = %id, "email looks like another account's");
                        store::set_email_key(&mut conn, id, &format!("dup:{id}")).await?;
                        progressed = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn limit(&self, key: String, limit: Limit) -> Result<(), IdentityError> {
        match self.limiter.hit(&key, limit).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Limited { retry_after }) => {
                metrics::counter!("identity_rate_limited_total").increment(1);
                Err(IdentityError::RateLimited {
                    retry_after_secs: (retry_after.as_secs_f64().ceil() as u64).max(1),
                })
            }
            Err(e) => Err(IdentityError::Internal(e.into())),
        }
    }

    /// Whether `device` (a device cookie's value) was issued to `user` by an earlier log-in.
    async fn known_device(
        &self,
        device: Option<&str>,
        user: UserId,
    ) -> Result<bool, IdentityError> {
        let Some(device) = device else {
            return Ok(false);
        };
        let mut conn = self.db.pool().acquire().await?;
        let since = clock::now_micros() - DEVICE_TTL_MICROS;
        Ok(store::device_user(&mut conn, &secrets::digest(device), since).await? == Some(user))
    }

    /// A new device token for a browser that just proved it knows the account's password.
    async fn remember_device(&self, user: UserId) -> Result<String, IdentityError> {
        let token = secrets::random_secret();
        let mut conn = self.db.pool().acquire().await?;
        store::insert_device(
            &mut conn,
            &secrets::digest(&token),
            user,
            clock::now_micros(),
        )
        .await?;
        Ok(token)
    }

    /// Creates a user with `roles`, publishing `UserRegistered` in the same transaction.
    async fn register(
        &self,
        email: &Email,
        display_name: &DisplayName,
        password: Password,
        roles: &[Role],
    ) -> Result<User, IdentityError> {
        let password_hash = self.hasher.hash(password.expose().to_owned()).await?;
        let id = UserId::new();
        let now = clock::now_micros();
        let mut tx = self.db.begin().await?;
        let inserted = store::insert_user(
            &mut tx,
            &store::NewUser {
                id,
                email: email.as_str(),
                email_key: &email.lookalike_key(),
                display_name: display_name.as_str(),
                password_hash: &password_hash,
                roles,
                created_at: now,
            },
        )
        .await;
        match inserted {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => return Err(IdentityError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        let user = User {
            id,
            email: email.as_str().to_owned(),
            display_name: display_name.as_str().to_owned(),
            roles: roles.to_vec(),
            created_at: clock::from_micros(now),
        };
        let event = UserRegistered {
            user_id: id,
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            registered_at: user.created_at,
        };
        outbox::enqueue(&mut tx, &Envelope::new(&event).with_aggregate("user", id)).await?;
        tx.commit().await.map_err(|e| {
            if is_unique_violation(&e) {
                IdentityError::EmailTaken
            } else {
                e.into()
            }
        })?;
        self.db.outbox_committed();
        metrics::counter!("identity_users_registered_total").increment(1);
        tracing::info!(user_id = %id, "user registered");
        Ok(user)
    }

    async fn open_session(&self, user: User) -> Result<NewSession, IdentityError> {
        let id = SessionId::new();
        let token = secrets::random_secret();
        let csrf_token = secrets::random_secret();
        let now = clock::now();
        let expires_at = now + self.config.session_ttl();
        let mut conn = self.db.pool().acquire().await?;
        store::insert_session(
            &mut conn,
            id,
            &secrets::digest(&token),
            user.id,
            &csrf_token,
            clock::to_micros(now),
            clock::to_micros(expires_at),
        )
        .await?;
        Ok(NewSession {
            id,
            token,
            csrf_token,
            expires_at,
            user,
            device: None,
        })
    }

    /// Creates an administrator (from the CLI). Refuses an email that is taken.
    pub async fn create_admin(
        &self,
        email: &str,
        display_name: &str,
        password: &str,
    ) -> Result<User, IdentityError> {
        let email = Email::parse(email)?;
        let display_name = DisplayName::parse(display_name)?;
        let password = Password::parse(password)?;
        self.register(
            &email,
            &display_name,
            password,
            &[Role::Customer, Role::Admin],
        )
        .await
    }

    /// Deletes expired sessions and forgotten devices; run periodically by the service's
    /// worker.
    pub async fn purge_expired_sessions(&self) -> Result<u64, IdentityError> {
        let mut conn = self.db.pool().acquire().await?;
        let now = clock::now_micros();
        let sessions = store::delete_expired_sessions(&mut conn, now).await?;
        let devices = store::delete_devices_before(&mut conn, now - DEVICE_TTL_MICROS).await?;
        Ok(sessions + devices)
    }
}

#[async_trait]
impl IdentityApi for Identity {
    async fn sign_up(&self, input: SignUp, meta: ClientMeta) -> Result<NewSession, IdentityError> {
        if let Some(ip) = meta.ip {
            self.limit(format!("signup:ip:{ip}"), self.config.signup_per_ip)
                .await?;
        }
        let email = Email::parse(&input.email)?;
        let display_name = DisplayName::parse(&input.display_name)?;
        let password = Password::parse(&input.password)?;
        self.limit(
            format!("signup:account:{email}"),
            self.config.signup_per_account,
        )
        .await?;
        let user = self
            .register(&email, &display_name, password, &[Role::Customer])
            .await?;
        if let Some(old) = input.end_session {
            self.end_session(old).await?;
        }
        let device = self.remember_device(user.id).await?;
        let mut session = self.open_session(user).await?;
        session.device = Some(device);
        Ok(session)
    }

    /// The log-in policy (docs/login-policy.md): every attempt counts against the address;
    /// failures count against the account from that address (refused beyond the limit) and
    /// against the account from anywhere (beyond that ceiling, browsers the account has not
    /// signed in on before are slowed, never refused).
    async fn log_in(&self, input: LogIn, meta: ClientMeta) -> Result<NewSession, IdentityError> {
        let LogIn {
            email,
            password,
            rotate_from,
        } = input;
        let address = meta
            .ip
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        if meta.ip.is_some() {
            self.limit(format!("login:ip:{address}"), self.config.login_per_ip)
                .await?;
        }
        // A malformed email cannot match an account: same answer as a wrong password.
        let email = Email::parse(&email).map_err(|_| IdentityError::InvalidCredentials)?;
        let pair_key = format!("login:pair:{email}:{address}");
        self.limit(pair_key.clone(), self.config.login_per_account_address)
            .await?;
        let found = {
            let mut conn = self.db.pool().acquire().await?;
            store::credentials_by_email(&mut conn, email.as_str()).await?
        };
        if password.len() > Password::MAX_BYTES {
            // No stored password is this long; don't spend a hash on it.
            return Err(IdentityError::InvalidCredentials);
        }
        let known = match &found {
            Some((user, _)) => self.known_device(meta.device.as_deref(), user.id).await?,
            None => false,
        };
        if !known {
            let account_key = format!("login:account:{email}");
            match self.limit(account_key, self.config.login_per_account).await {
                Ok(()) => {}
                // Under attack: a stranger's attempt waits, the owner's known browser does
                // not, and nobody is refused because of the account's count.
                Err(IdentityError::RateLimited { .. }) => {
                    metrics::counter!("identity_login_slowed_total").increment(1);
                    tokio::time::sleep(self.config.login_slowdown()).await;
                }
                Err(e) => return Err(e),
            }
        }
        // Verify against the decoy when the email is unknown: same work, same answer.
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, self.decoy_hash.clone()),
        };
        let matches = self.hasher.verify(password, hash).await?;
        let Some(user) = user.filter(|_| matches) else {
            return Err(IdentityError::InvalidCredentials);
        };
        if let Err(e) = self.limiter.forgive(&pair_key).await {
            tracing::warn!(error = %e, "could not reset the log-in failure count");
        }
        if let Some(old) = rotate_from {
            self.end_session(old).await?;
        }
        let device = match (known, meta.device) {
            (true, Some(device)) => device,
            _ => self.remember_device(user.id).await?,
        };
        let mut session = self.open_session(user).await?;
        session.device = Some(device);
        Ok(session)
    }

    async fn log_out(&self, session: SessionId) -> Result<(), IdentityError> {
        self.end_session(session).await
    }

    async fn user(&self, id: UserId) -> Result<User, IdentityError> {
        if let Some(user) = self.users.get(id) {
            return Ok(user);
        }
        let mut conn = self.db.pool().acquire().await?;
        let user = store::user_by_id(&mut conn, id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.users.put(&user);
        Ok(user)
    }

    async fn create_token(&self, user: UserId, name: &str) -> Result<NewToken, IdentityError> {
        let name = TokenName::parse(name)?;
        let secret = secrets::new_api_token();
        let prefix: String = secret
            .chars()
            .take(secrets::TOKEN_PREFIX.len() + 6)
            .collect();
        let id = TokenId::new();
        let now = clock::now();
        let mut conn = self.db.pool().acquire().await?;
        store::insert_token(
            &mut conn,
            &store::NewTokenRow {
                id,
                user,
                name: name.as_str(),
                token_hash: &secrets::digest(&secret),
                prefix: &prefix,
                created_at: clock::to_micros(now),
            },
        )
        .await?;
        Ok(NewToken {
            info: TokenInfo {
                id,
                name: name.as_str().to_owned(),
                prefix,
                created_at: clock::from_micros(clock::to_micros(now)),
                last_used_at: None,
            },
            token: secret,
        })
    }

    async fn list_tokens(
        &self,
        user: UserId,
        after: Option<TokenId>,
        limit: u32,
    ) -> Result<Vec<TokenInfo>, IdentityError> {
        let mut conn = self.db.pool().acquire().await?;
        Ok(store::tokens_of(&mut conn, user, after, i64::from(limit.min(1000))).await?)
    }

    async fn revoke_token(&self, user: UserId, token: TokenId) -> Result<(), IdentityError> {
        let mut conn = self.db.pool().acquire().await?;
        if !store::revoke_token(&mut conn, user, token, clock::now_micros()).await? {
            return Err(IdentityError::NotFound);
        }
        self.cache
            .forget(|p| matches!(p.via, Via::ApiToken { token_id } if token_id == token.as_uuid()));
        Ok(())
    }
}

impl Identity {
    /// Ends a session: deleted server-side and dropped from the cache, so its cookie stops
    /// working at once in this process.
    async fn end_session(&self, session: SessionId) -> Result<(), IdentityError> {
        let mut conn = self.db.pool().acquire().await?;
        store::delete_session(&mut conn, session).await?;
        self.cache.forget(
            |p| matches!(p.via, Via::Session { session_id, .. } if session_id == session.as_uuid()),
        );
        Ok(())
    }

    /// Resolves a credential against the database, bypassing the cache (the internal route
    /// remote callers use, so their own cache is the only one in their path).
    pub async fn authenticate_uncached(
        &self,
        credential: &Credential,
    ) -> Result<Option<Principal>, AuthError> {
        let internal = |e: anyhow::Error| AuthError(e.to_string());
        let mut conn = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(|e| AuthError(e.to_string()))?;
        let now = clock::now_micros();
        let principal = match credential {
            Credential::SessionCookie(token) => {
                store::live_session(&mut conn, &secrets::digest(token), now)
                    .await
                    .map_err(internal)?
                    .map(|(session_id, csrf_token, user)| {
                        principal(
                            user,
                            Via::Session {
                                session_id,
                                csrf_token,
                            },
                        )
                    })
            }
            Credential::Bearer(token) => {
                let Some((token_id, last_used, user)) =
                    store::live_token(&mut conn, &secrets::digest(token))
                        .await
                        .map_err(internal)?
                else {
                    return Ok(None);
                };
                if last_used.is_none_or(|t| now - t > TOKEN_TOUCH_INTERVAL_MICROS) {
                    store::touch_token(&mut conn, token_id, now)
                        .await
                        .map_err(|e| AuthError(e.to_string()))?;
                }
                Some(principal(
                    user,
                    Via::ApiToken {
                        token_id: token_id.as_uuid(),
                    },
                ))
            }
        };
        Ok(principal)
    }
}

#[async_trait]
impl Authenticator for Identity {
    async fn authenticate(&self, credential: &Credential) -> Result<Option<Principal>, AuthError> {
        if let Some(principal) = self.cache.get(credential) {
            return Ok(Some(principal));
        }
        let found = self.authenticate_uncached(credential).await?;
        if let Some(principal) = &found {
            self.cache.put(credential, principal);
        }
        Ok(found)
    }
}

fn principal(user: User, via: Via) -> Principal {
    Principal {
        user_id: user.id,
        email: user.email,
        display_name: user.display_name,
        roles: user.roles,
        via,
    }
}
