-- Display names of people, projected from identity's UserRegistered (consumer
-- wallet.people), so the wallet's pages name sellers, buyers and creators.
CREATE TABLE people (
    user_id       TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    registered_at BIGINT NOT NULL
);
