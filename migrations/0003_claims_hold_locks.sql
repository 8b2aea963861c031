-- Claims now hold their rows with a row lock inside an open transaction instead of writing a
-- lease ('sending' + claimed_by + due_at) that the write-back then overwrote: one row version
-- per submission instead of two. The write-back finds its rows by primary key, so the index of
-- rows in flight by worker is no longer used.
DROP INDEX IF EXISTS deliveries_in_flight;
