//! The ledger: every movement of money is a balanced set of postings written in one
//! transaction with the balances it changes, so balances and postings always agree. A
//! user's available money (balance minus held) is checked and taken in one conditional
//! `UPDATE`, so concurrent requests can never spend it twice.

use rendermart_platform::{
    clock,
    db::{is_unique_violation, Db},
};
use rendermart_types::{Currency, UserId};
use serde::Serialize;
use sqlx::{AnyConnection, FromRow};
use utoipa::ToSchema;

use crate::{
    config::WalletConfig,
    domain::{test_provider, Amount, IdempotencyKey, Invalid},
};

rendermart_types::entity_id!(
    /// A top-up or payout: one line of a user's history (UUID v7, so ordered by time).
    TransactionId
);

/// The platform's side of top-ups: money that came in through the payment provider.
pub(crate) const PROVIDER_CLEARING: &str = "platform:provider_clearing";
/// The platform's side of payouts: money sent to users' banks.
const PAYOUTS: &str = "platform:payouts";
/// What people paid for image generations.
pub(crate) const GENERATION_REVENUE: &str = "platform:generation_revenue";
/// The platform's fees on sales.
pub(crate) const FEES: &str = "platform:fees";
/// Every platform account, made once at start ([`Ledger::open_platform_accounts`]) so no
/// money movement has to.
const PLATFORM_ACCOUNTS: [&str; 6] = [
    PROVIDER_CLEARING,
    PAYOUTS,
    GENERATION_REVENUE,
    FEES,
    STORE_ESCROW,
    STORE_REFUNDS,
];
/// Store orders paid and not yet shipped (their sellers are paid out of it at shipping).
pub(crate) const STORE_ESCROW: &str = "platform:store_escrow";
/// Refunds of store orders after their sellers were paid: the platform bears them.
pub(crate) const STORE_REFUNDS: &str = "platform:store_refunds";

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the payment was declined: {0}")]
    Declined(String),
    /// A webhook whose signature or timestamp does not check out.
    #[error("webhook refused: {0}")]
    BadWebhook(String),
    #[error("insufficient funds")]
    InsufficientFunds,
    /// The idempotency key was used before for a different request.
    #[error("idempotency key reused for a different request")]
    KeyReused,
    #[error("not found")]
    NotFound,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// The database being unreachable or busy (a lock wait, a serialization failure) is
/// "try again" (503); anything else is a bug (500).
impl From<sqlx::Error> for WalletError {
    fn from(e: sqlx::Error) -> Self {
        if rendermart_platform::db::is_transient(&e) {
            WalletError::Unavailable(e.to_string())
        } else {
            WalletError::Internal(e.into())
        }
    }
}

/// A user's wallet as they see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct WalletView {
    /// Everything the user has, in minor units (held included).
    pub balance: i64,
    /// The part promised: pending payouts, generations and offers.
    pub held: i64,
    /// What can be spent or paid out now: balance minus held.
    pub available: i64,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
}

/// One line of a user's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, FromRow, ToSchema)]
pub struct Transaction {
    pub id: TransactionId,
    /// `topup`, `payout`, `generation`, `offer` (a held offer; settled when accepted),
    /// `purchase`, `sale` or `royalty`.
    pub kind: String,
    /// `settled`; `pending` (a payout, generation or offer whose amount is held); `reversed` (a
    /// payout the bank sent back); `released` (a hold given back: the generation failed);
    /// `refused` (the money was not there, nothing moved); for card top-ups, `processing`
    /// (waiting for the payment) and `failed`.
    pub status: String,
    /// Minor units from the user's side: positive in, negative out.
    pub amount: i64,
    pub description: String,
    /// UTC microseconds since the epoch.
    pub created_at: i64,
}

/// What a top-up or payout request produced, and whether it was a replay of an earlier
/// request with the same idempotency key.
pub struct Outcome {
    pub transaction: Transaction,
    pub replayed: bool,
    /// For a card top-up: what the browser needs to pay.
    pub payment: Option<crate::payments::PaymentStart>,
}

/// The ledger's health: both must be zero.
#[derive(Debug, PartialEq, Eq)]
pub struct LedgerCheck {
    /// Sum of all postings (double entry: 0).
    pub imbalance: i64,
    /// People's accounts whose balance differs from the sum of their postings (a
    /// platform account's balance is that sum by definition).
    pub out_of_step: i64,
    /// Accounts whose held amount differs from the sum of their pending holds.
    pub holds_out_of_step: i64,
}

/// What asking to hold money for a reference did.
#[derive(Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Held now.
    Held,
    /// The available money did not cover it: nothing is held (recorded as refused).
    Refused { available: i64 },
    /// The reference was decided before (held, captured, released or refused).
    Decided,
}

pub struct Ledger {
    db: Db,
    config: WalletConfig,
    currency: Currency,
    stripe: Option<crate::stripe::StripeClient>,
}

/// The platform's own accounts (`platform:<name>`): their balance is the sum of their
/// postings, not a column kept in step.
fn is_platform(account: &str) -> bool {
    account.starts_with("platform:")
}

/// A platform account's balance: the sum of its postings.
pub async fn platform_balance(db: &Db, account: &str) -> Result<i64, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let (sum,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM wallet_postings WHERE account_id = $1",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    Ok(sum)
}

pub(crate) fn user_account(user: UserId) -> String {
    format!("user:{user}")
}

const TRANSACTION_COLUMNS: &str = "id, kind, status, amount, description, created_at";

impl Ledger {
    pub fn new(db: Db, config: WalletConfig) -> anyhow::Result<Self> {
        let currency = Currency::parse(&config.currency)
            .map_err(|e| anyhow::anyhow!("wallet.currency: {e}"))?;
        let stripe = match (config.payment_provider.as_str(), &config.stripe) {
            ("test", _) => None,
            ("stripe", Some(stripe)) => {
                Some(crate::stripe::StripeClient::new(stripe).map_err(|e| anyhow::anyhow!(e.0))?)
            }
            ("stripe", None) => anyhow::bail!(
                "wallet.payment_provider is stripe but [wallet.stripe] is not configured"
            ),
            (other, _) => {
                anyhow::bail!("wallet.payment_provider must be test or stripe, not {other:?}")
            }
        };
        Ok(Self {
            db,
            config,
            currency,
            stripe,
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Makes the platform's accounts if they are missing. Run once at start.
    pub async fn open_platform_accounts(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool().acquire().await?;
        for account in PLATFORM_ACCOUNTS {
            self.ensure_account(&mut conn, account, None).await?;
        }
        Ok(())
    }

    pub fn max_topup(&self) -> i64 {
        self.config.max_topup
    }

    pub fn max_payout(&self) -> i64 {
        self.config.max_payout
    }

    pub fn config(&self) -> &WalletConfig {
        &self.config
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Stripe, when it takes the top-ups.
    pub(crate) fn stripe(&self) -> Option<&crate::stripe::StripeClient> {
        self.stripe.as_ref()
    }

    pub(crate) async fn ensure_account(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        owner: Option<UserId>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO wallet_accounts (id, owner_id, currency, balance, held, created_at) \
             VALUES ($1, $2, $3, 0, 0, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(owner)
        .bind(self.currency.code())
        .bind(clock::now_micros())
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn wallet(&self, user: UserId) -> Result<WalletView, WalletError> {
        let mut conn = self.db.pool().acquire().await?;
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT balance, held FROM wallet_accounts WHERE id = $1")
                .bind(user_account(user))
                .fetch_optional(&mut *conn)
                .await?;
        let (balance, held) = row.unwrap_or((0, 0));
        Ok(WalletView {
            balance,
            held,
            available: balance - held,
            currency: self.currency.code().to_owned(),
        })
    }

    /// One page of the user's history, newest first, before `before`.
    pub async fn transactions(
        &self,
        user: UserId,
        before: Option<TransactionId>,
        limit: u32,
    ) -> Result<Vec<Transaction>, WalletError> {
        let mut conn = self.db.pool().acquire().await?;
        let limit = i64::from(limit.clamp(1, 100));
        let rows = match before {
            Some(before) => {
                sqlx::query_as(&format!(
                    "SELECT {TRANSACTION_COLUMNS} FROM wallet_transactions \
                     WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
                ))
                .bind(user)
                .bind(before)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT {TRANSACTION_COLUMNS} FROM wallet_transactions \
                     WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(user)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        Ok(rows)
    }

    /// The earlier transaction made with `key`, if any. Reusing a key for a different
    /// request is refused.
    pub(crate) async fn replay(
        &self,
        conn: &mut AnyConnection,
        user: UserId,
        key: Option<&IdempotencyKey>,
        kind: &str,
        amount: i64,
    ) -> Result<Option<Transaction>, WalletError> {
        let Some(key) = key else {
            return Ok(None);
        };
        let earlier: Option<Transaction> = sqlx::query_as(&format!(
            "SELECT {TRANSACTION_COLUMNS} FROM wallet_transactions \
             WHERE user_id = $1 AND idempotency_key = $2"
        ))
        .bind(user)
        .bind(key.as_str())
        .fetch_optional(conn)
        .await?;
        match earlier {
            Some(t) if t.kind == kind && t.amount == amount => Ok(Some(t)),
            Some(_) => Err(WalletError::KeyReused),
            None => Ok(None),
        }
    }

    /// The earlier request made with `key`, as an outcome to answer with again.
    async fn replayed(
        &self,
        user: UserId,
        key: Option<&IdempotencyKey>,
        kind: &str,
        amount: i64,
    ) -> Result<Option<Outcome>, WalletError> {
        let mut conn = self.db.pool().acquire().await?;
        Ok(self
            .replay(&mut conn, user, key, kind, amount)
            .await?
            .map(|transaction| Outcome {
                transaction,
                replayed: true,
                payment: None,
            }))
    }

    /// Credits `amount` through the payment provider: with the test provider, the user's
    /// account and the provider clearing account, one balanced transaction, at once; with
    /// Stripe, a top-up that waits for its payment ([`crate::payments`]).
    pub async fn top_up(
        &self,
        user: UserId,
        amount: Amount,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome, WalletError> {
        if let Some(stripe) = &self.stripe {
            return crate::payments::start_card_top_up(self, stripe, user, amount, key).await;
        }
        let a = amount.minor_units();
        if let Some(earlier) = self.replayed(user, key.as_ref(), "topup", a).await? {
            return Ok(earlier);
        }
        test_provider::charge(a).map_err(|why| WalletError::Declined(why.to_owned()))?;
        let account = user_account(user);
        let mut tx = self.db.begin().await?;
        self.ensure_account(&mut tx, &account, Some(user)).await?;
        let transaction = match self
            .insert_transaction(&mut tx, user, "topup", "settled", a, "Top-up", key.as_ref())
            .await
        {
            Ok(t) => t,
            Err(e) if is_unique_violation(&e) => {
                // The same key won a race a moment ago: answer with its transaction.
                drop(tx);
                return self
                    .replayed(user, key.as_ref(), "topup", a)
                    .await?
                    .ok_or(WalletError::Internal(anyhow::anyhow!("idempotency race")));
            }
            Err(e) => return Err(e.into()),
        };
        self.post(
            &mut tx,
            transaction.id,
            &[(&account, a), (PROVIDER_CLEARING, -a)],
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("wallet_topups_total").increment(1);
        Ok(Outcome {
            transaction,
            replayed: false,
            payment: None,
        })
    }

    /// Holds `amount` of the user's available money for a payout, which the provider then
    /// settles or reverses ([`Ledger::settle_due_payouts`]).
    pub async fn request_payout(
        &self,
        user: UserId,
        amount: Amount,
        key: Option<IdempotencyKey>,
    ) -> Result<Outcome, WalletError> {
        let a = amount.minor_units();
        if let Some(earlier) = self.replayed(user, key.as_ref(), "payout", -a).await? {
            return Ok(earlier);
        }
        let account = user_account(user);
        let mut tx = self.db.begin().await?;
        // Check and take in one statement: two payouts racing for the same money cannot
        // both see it available.
        let held = sqlx::query(
            "UPDATE wallet_accounts SET held = held + $1 WHERE id = $2 AND balance - held >= $1",
        )
        .bind(a)
        .bind(&account)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held != 1 {
            return Err(WalletError::InsufficientFunds);
        }
        let transaction = match self
            .insert_transaction(
                &mut tx,
                user,
                "payout",
                "pending",
                -a,
                "Payout to your bank",
                key.as_ref(),
            )
            .await
        {
            Ok(t) => t,
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return self
                    .replayed(user, key.as_ref(), "payout", -a)
                    .await?
                    .ok_or(WalletError::Internal(anyhow::anyhow!("idempotency race")));
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        metrics::counter!("wallet_payouts_requested_total").increment(1);
        Ok(Outcome {
            transaction,
            replayed: false,
            payment: None,
        })
    }

    /// Settles (or, for the provider's reversed amount, reverses) payouts pending for
    /// longer than the provider's settlement time. Each in its own transaction; a payout
    /// another replica settled first is skipped. Returns how many it finished.
    pub async fn settle_due_payouts(&self) -> Result<u64, WalletError> {
        let due = clock::now_micros()
            - i64::try_from(self.config.payout_settle_secs.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX);
        let pending: Vec<(TransactionId, UserId, i64)> = {
            let mut conn = self.db.pool().acquire().await?;
            sqlx::query_as(
                "SELECT id, user_id, amount FROM wallet_transactions \
                 WHERE status = 'pending' AND kind = 'payout' AND created_at <= $1 \
                 ORDER BY created_at LIMIT 100",
            )
            .bind(due)
            .fetch_all(&mut *conn)
            .await?
        };
        let mut finished = 0;
        for (id, user_id, amount) in pending {
            let a = -amount;
            let account = user_account(user_id);
            let settles = test_provider::payout_settles(a);
            let (status, description) = if settles {
                ("settled", "Payout to your bank")
            } else {
                ("reversed", "Payout reversed by the bank; the money is back")
            };
            let mut tx = self.db.begin().await?;
            let claimed = sqlx::query(
                "UPDATE wallet_transactions SET status = $1, description = $2, updated_at = $3 \
                 WHERE id = $4 AND status = 'pending' AND kind = 'payout'",
            )
            .bind(status)
            .bind(description)
            .bind(clock::now_micros())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed != 1 {
                continue;
            }
            sqlx::query("UPDATE wallet_accounts SET held = held - $1 WHERE id = $2")
                .bind(a)
                .bind(&account)
                .execute(&mut *tx)
                .await?;
            if settles {
                self.post(&mut tx, id, &[(&account, -a), (PAYOUTS, a)])
                    .await?;
            }
            tx.commit().await?;
            metrics::counter!("wallet_payouts_finished_total", "outcome" => status).increment(1);
            finished += 1;
        }
        Ok(finished)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert_transaction(
        &self,
        conn: &mut AnyConnection,
        user: UserId,
        kind: &str,
        status: &str,
        amount: i64,
        description: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Transaction, sqlx::Error> {
        let id = TransactionId::new();
        let now = clock::now_micros();
        sqlx::query(
            "INSERT INTO wallet_transactions \
             (id, user_id, kind, status, amount, description, idempotency_key, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(id)
        .bind(user)
        .bind(kind)
        .bind(status)
        .bind(amount)
        .bind(description)
        .bind(key.map(IdempotencyKey::as_str))
        .bind(now)
        .execute(conn)
        .await?;
        Ok(Transaction {
            id,
            kind: kind.to_owned(),
            status: status.to_owned(),
            amount,
            description: description.to_owned(),
            created_at: now,
        })
    }

    /// Writes several history lines in one statement: (id, user, kind, amount, description),
    /// all `settled`.
    pub(crate) async fn insert_settled_lines(
        &self,
        conn: &mut AnyConnection,
        lines: &[(TransactionId, UserId, &str, i64, &str)],
    ) -> Result<(), sqlx::Error> {
        let now = clock::now_micros();
        let rows: Vec<String> = (0..lines.len())
            .map(|i| {
                let b = i * 6;
                format!(
                    "(${}, ${}, ${}, 'settled', ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 6
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO wallet_transactions \
             (id, user_id, kind, status, amount, description, created_at, updated_at) VALUES {}",
            rows.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for (id, user, kind, amount, description) in lines {
            insert = insert
                .bind(*id)
                .bind(*user)
                .bind(*kind)
                .bind(*amount)
                .bind(*description)
                .bind(now);
        }
        insert.execute(conn).await?;
        Ok(())
    }

    /// Credits `amount` to a person's account, making it if they have none, in one
    /// statement; its posting must then be written with the balance already moved.
    pub(crate) async fn credit_person(
        &self,
        conn: &mut AnyConnection,
        user: UserId,
        amount: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO wallet_accounts (id, owner_id, currency, balance, held, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5) \
             ON CONFLICT (id) DO UPDATE SET balance = wallet_accounts.balance + excluded.balance",
        )
        .bind(user_account(user))
        .bind(user)
        .bind(self.currency.code())
        .bind(amount)
        .bind(clock::now_micros())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Writes balanced postings and moves the balances with them.
    pub(crate) async fn post(
        &self,
        conn: &mut AnyConnection,
        transaction: TransactionId,
        postings: &[(&str, i64)],
    ) -> Result<(), WalletError> {
        self.post_after(conn, transaction, postings, 0).await
    }

    /// [`Ledger::post`], where the balances of the first `moved` postings were already moved
    /// by their amounts (the conditional `UPDATE` that checked the money was there, a
    /// credit made with the account).
    /// One statement writes the postings; a person's balance is then moved in step, a
    /// platform account's is the sum of its postings.
    pub(crate) async fn post_after(
        &self,
        conn: &mut AnyConnection,
        transaction: TransactionId,
        postings: &[(&str, i64)],
        moved: usize,
    ) -> Result<(), WalletError> {
        let sum: i64 = postings.iter().map(|(_, a)| a).sum();
        if sum != 0 || postings.is_empty() {
            return Err(WalletError::Internal(anyhow::anyhow!(
                "unbalanced postings for {transaction}: {postings:?}"
            )));
        }
        let now = clock::now_micros();
        let rows: Vec<String> = (0..postings.len())
            .map(|i| {
                let b = i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO wallet_postings (id, transaction_id, account_id, amount, created_at) \
             VALUES {}",
            rows.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for (account, amount) in postings {
            insert = insert
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(transaction)
                .bind(*account)
                .bind(*amount)
                .bind(now);
        }
        insert.execute(&mut *conn).await?;
        for (i, (account, amount)) in postings.iter().enumerate() {
            // A person's balance is kept in step here (it is checked against what they
            // spend); a platform account's is derived from its postings, so no sale waits
            // for the one row every sale would otherwise update (the fees account).
            let already_moved = i < moved;
            if !is_platform(account) && !already_moved {
                sqlx::query("UPDATE wallet_accounts SET balance = balance + $1 WHERE id = $2")
                    .bind(*amount)
                    .bind(*account)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Holds `amount` of `user`'s available money for `reference`, once: a pending
    /// transaction of `kind` (what the history shows) whose amount is held. Money not there
    /// is recorded as a refused transaction, so a later ask for the same reference is
    /// decided too. Runs in the caller's transaction.
    pub(crate) async fn hold(
        &self,
        conn: &mut AnyConnection,
        user: UserId,
        reference: &str,
        kind: &str,
        amount: i64,
        description: &str,
    ) -> Result<HoldOutcome, WalletError> {
        let decided: Option<(String,)> =
            sqlx::query_as("SELECT status FROM wallet_transactions WHERE reference = $1")
                .bind(reference)
                .fetch_optional(&mut *conn)
                .await?;
        if decided.is_some() {
            return Ok(HoldOutcome::Decided);
        }
        let account = user_account(user);
        self.ensure_account(conn, &account, Some(user)).await?;
        let held = sqlx::query(
            "UPDATE wallet_accounts SET held = held + $1 WHERE id = $2 AND balance - held >= $1",
        )
        .bind(amount)
        .bind(&account)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let outcome = if held == 1 {
            HoldOutcome::Held
        } else {
            let (available,): (i64,) =
                sqlx::query_as("SELECT balance - held FROM wallet_accounts WHERE id = $1")
                    .bind(&account)
                    .fetch_one(&mut *conn)
                    .await?;
            HoldOutcome::Refused { available }
        };
        let status = match outcome {
            HoldOutcome::Held => "pending",
            _ => "refused",
        };
        let t = self
            .insert_transaction(conn, user, kind, status, -amount, description, None)
            .await?;
        sqlx::query("UPDATE wallet_transactions SET reference = $1 WHERE id = $2")
            .bind(reference)
            .bind(t.id)
            .execute(&mut *conn)
            .await?;
        Ok(outcome)
    }

    /// Captures the pending hold for `reference`: the held money leaves the user's
    /// account for the accounts `split` names given the captured amount (shares summing to
    /// it; those accounts must exist). `false` when there is no pending hold for it (never held, refused, or already
    /// captured or released).
    pub(crate) async fn capture(
        &self,
        conn: &mut AnyConnection,
        reference: &str,
        description: &str,
        split: impl FnOnce(i64) -> Vec<(String, i64)>,
    ) -> Result<bool, WalletError> {
        let Some((id, user, amount)) = self
            .finish_hold(conn, reference, "settled", description)
            .await?
        else {
            return Ok(false);
        };
        let shares = split(-amount);
        let account = user_account(user);
        let mut postings = vec![(account.as_str(), amount)];
        postings.extend(shares.iter().map(|(a, share)| (a.as_str(), *share)));
        self.post(conn, id, &postings).await?;
        Ok(true)
    }

    /// Releases the pending hold for `reference`: the money is available again. `false`
    /// when there is no pending hold for it.
    pub(crate) async fn release(
        &self,
        conn: &mut AnyConnection,
        reference: &str,
        description: &str,
    ) -> Result<bool, WalletError> {
        Ok(self
            .finish_hold(conn, reference, "released", description)
            .await?
            .is_some())
    }

    /// Moves the pending hold for `reference` to `status` and frees its held amount:
    /// its transaction, user and (negative) amount.
    async fn finish_hold(
        &self,
        conn: &mut AnyConnection,
        reference: &str,
        status: &str,
        description: &str,
    ) -> Result<Option<(TransactionId, UserId, i64)>, WalletError> {
        let finished: Option<(TransactionId, UserId, i64)> = sqlx::query_as(
            "UPDATE wallet_transactions SET status = $1, description = $2, updated_at = $3 \
             WHERE reference = $4 AND status = 'pending' RETURNING id, user_id, amount",
        )
        .bind(status)
        .bind(description)
        .bind(clock::now_micros())
        .bind(reference)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((_, user, amount)) = &finished {
            sqlx::query("UPDATE wallet_accounts SET held = held + $1 WHERE id = $2")
                .bind(amount)
                .bind(user_account(*user))
                .execute(&mut *conn)
                .await?;
        }
        Ok(finished)
    }

    /// The ledger's invariants: postings sum to zero, every balance equals its postings,
    /// and every held amount equals the user's pending holds.
    pub async fn check(&self) -> Result<LedgerCheck, WalletError> {
        let mut conn = self.db.pool().acquire().await?;
        let (imbalance,): (i64,) =
            sqlx::query_as("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM wallet_postings")
                .fetch_one(&mut *conn)
                .await?;
        let (out_of_step,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM wallet_accounts a WHERE a.owner_id IS NOT NULL \
             AND a.balance <> (SELECT CAST(COALESCE(SUM(p.amount), 0) AS BIGINT) \
             FROM wallet_postings p WHERE p.account_id = a.id)",
        )
        .fetch_one(&mut *conn)
        .await?;
        let (holds_out_of_step,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM wallet_accounts a WHERE a.owner_id IS NOT NULL \
             AND a.held <> (SELECT CAST(COALESCE(-SUM(t.amount), 0) AS BIGINT) \
             FROM wallet_transactions t WHERE t.user_id = a.owner_id AND t.status = 'pending')",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(LedgerCheck {
            imbalance,
            out_of_step,
            holds_out_of_step,
        })
    }
}
