-- SQLite already compares TEXT byte-wise (BINARY); kept so both backends share numbering.
SELECT 1;
