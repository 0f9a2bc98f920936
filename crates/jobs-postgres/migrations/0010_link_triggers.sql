-- The links between jobs (`resumed_from`, `previous_job_id`, `next_job_id`) keep the rules of
-- their foreign keys (0008_retention.sql), checked only where a link is set.
--
-- A foreign key queues its check for every inserted row, set or not, and runs it at the end
-- of the statement: three checks for each job, though almost every job names none (a bulk
-- enqueue of 5,000 jobs ran 15,000). A trigger with a WHEN clause is not even queued when
-- the clause is false. The keys become two triggers that keep the same two rules:
-- * a job inserted, or updated to a new link, names an existing job: the check locks it
--   `FOR KEY SHARE`, as a foreign key's check does (a delete of it waits for, and retention's
--   `SKIP LOCKED` passes over, a job being linked to), or refuses the row with
--   `foreign_key_violation` (23503);
-- * a delete clears the links to the jobs it deleted (`ON DELETE SET NULL`): one update per
--   link column after the statement, through the column's partial index, from a snapshot
--   taken after the delete (a job linked to a deleted one while it waited is cleared too).
-- Both run after the statement, as the keys' checks did, so one statement may insert a job
-- and link another to it (a chained completion).
ALTER TABLE folio_jobs
    DROP CONSTRAINT folio_jobs_resumed_from_fkey,
    DROP CONSTRAINT folio_jobs_previous_job_id_fkey,
    DROP CONSTRAINT folio_jobs_next_job_id_fkey;

-- The functions run with the search path of this migration, as a key's checks name their
-- table whatever the caller's path. An error names the key it replaces.
CREATE FUNCTION folio_jobs_check_links() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    links uuid[] := ARRAY[NEW.resumed_from, NEW.previous_job_id, NEW.next_job_id];
    before uuid[] := ARRAY[NULL, NULL, NULL]::uuid[];
    keys text[] := ARRAY['folio_jobs_resumed_from_fkey', 'folio_jobs_previous_job_id_fkey',
                         'folio_jobs_next_job_id_fkey'];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        before := ARRAY[OLD.resumed_from, OLD.previous_job_id, OLD.next_job_id];
    END IF;
    FOR i IN 1..3 LOOP
        -- A key checks a link when it is set or changed, not one the update left alone.
        CONTINUE WHEN links[i] IS NULL OR links[i] IS NOT DISTINCT FROM before[i];
        PERFORM FROM folio_jobs WHERE id = links[i] FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('job %s names job %s, which does not exist', NEW.id, links[i]),
                CONSTRAINT = keys[i], TABLE = 'folio_jobs';
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER folio_jobs_links_inserted AFTER INSERT ON folio_jobs FOR EACH ROW
    WHEN (NEW.resumed_from IS NOT NULL OR NEW.previous_job_id IS NOT NULL
          OR NEW.next_job_id IS NOT NULL)
    EXECUTE FUNCTION folio_jobs_check_links();

CREATE TRIGGER folio_jobs_links_updated
    AFTER UPDATE OF resumed_from, previous_job_id, next_job_id ON folio_jobs FOR EACH ROW
    WHEN ((NEW.resumed_from IS NOT NULL AND NEW.resumed_from IS DISTINCT FROM OLD.resumed_from)
          OR (NEW.previous_job_id IS NOT NULL
              AND NEW.previous_job_id IS DISTINCT FROM OLD.previous_job_id)
          OR (NEW.next_job_id IS NOT NULL AND NEW.next_job_id IS DISTINCT FROM OLD.next_job_id))
    EXECUTE FUNCTION folio_jobs_check_links();

CREATE FUNCTION folio_jobs_unlink_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    ids uuid[] := ARRAY(SELECT id FROM deleted);
BEGIN
    UPDATE folio_jobs SET resumed_from = NULL WHERE resumed_from = ANY (ids);
    UPDATE folio_jobs SET previous_job_id = NULL WHERE previous_job_id = ANY (ids);
    UPDATE folio_jobs SET next_job_id = NULL WHERE next_job_id = ANY (ids);
    RETURN NULL;
END
$$;

CREATE TRIGGER folio_jobs_unlink_deleted AFTER DELETE ON folio_jobs
    REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
    EXECUTE FUNCTION folio_jobs_unlink_deleted();
