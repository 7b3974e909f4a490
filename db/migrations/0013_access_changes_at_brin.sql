DROP INDEX "access_changes_at_idx";--> statement-breakpoint
CREATE INDEX "access_changes_at_idx" ON "access_changes" USING brin ("at") WITH (autosummarize=true);