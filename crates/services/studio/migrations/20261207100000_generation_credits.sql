-- A generation's price and the state of its credit hold with the wallet.
-- hold: pending (asked, no answer yet) | held | free (price 0, nothing to hold) | refused.
-- The worker runs only jobs whose hold is held or free.
ALTER TABLE generation_jobs ADD COLUMN price BIGINT NOT NULL DEFAULT 0;
ALTER TABLE generation_jobs ADD COLUMN hold TEXT NOT NULL DEFAULT 'free';
CREATE INDEX generation_jobs_queued ON generation_jobs (status, hold, created_at);
