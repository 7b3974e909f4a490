ALTER TABLE "users" ADD COLUMN "compared_digest" text;--> statement-breakpoint
-- An update that changes a compared column but keeps the digest (any writer other than the apply
-- functions, a hand edit) clears it: a digest then never vouches for content it was not computed from,
-- and the reconcile compares that user column by column again.
CREATE FUNCTION "users_compared_digest_guard"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.compared_digest IS NOT DISTINCT FROM OLD.compared_digest
    AND (NEW.username, NEW.primary_email, NEW.primary_phone, NEW.name, NEW.avatar, NEW.is_suspended, NEW.custom_data,
      NEW.profile, NEW.application_id, NEW.last_sign_in_at, NEW.created_at, NEW.updated_at)
    IS DISTINCT FROM (OLD.username, OLD.primary_email, OLD.primary_phone, OLD.name, OLD.avatar, OLD.is_suspended, OLD.custom_data,
      OLD.profile, OLD.application_id, OLD.last_sign_in_at, OLD.created_at, OLD.updated_at) THEN
    NEW.compared_digest := NULL;
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
CREATE TRIGGER "users_compared_digest_guard" BEFORE UPDATE ON "users" FOR EACH ROW EXECUTE FUNCTION "users_compared_digest_guard"();
