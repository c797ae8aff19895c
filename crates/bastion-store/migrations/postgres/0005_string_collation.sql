-- Compare normalised strings byte-wise, as SQLite does, so that a prefix range can use the index.
ALTER TABLE idx_string ALTER COLUMN normalized TYPE TEXT COLLATE "C";
REINDEX INDEX idx_string_match;
