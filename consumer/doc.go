// Package consumer moves push jobs from a JetStream work-queue stream to an
// apns.Engine, and turns each engine outcome into an ack, a nak or a term
// plus the events producers act on. It owns the job format (Job,
// job.schema.json) and the event formats (event.go).
//
// # Flow
//
//	producers ──▶ <JobsSubject>[.>]  stream JobsStream (work queue, file)
//	                 │ durable pull consumer Durable, shared by every worker
//	                 ▼
//	   Worker.Run: track (InProgress), take one of MaxInFlight slots, queue
//	     sender ──Send(ctx, n, ref)──▶ apns.Engine
//	   Worker.HandleOutcome ◀── Outcome ──┘
//	     delivered  → Ack (receipt on <EventsSubject>.delivered first, if on)
//	     rejected   → <EventsSubject>.rejected (+ .badtokens), PubAck, then Ack
//	     failed     → NakWithDelay(Backoff); at MaxDeliver .deadletter, then Term
//	     expired    → .deadletter (reason Expired) at once, then Term
//	     malformed  → .rejected with the raw job and the rule's reason, then
//	                  Term; checked before Send (checkJob: decode by the
//	                  README's contract, apns.Notification.Validate with the
//	                  protocol's limits), so it never reaches the engine
//	     credentials→ NakWithDelay(last Backoff), logged loudly, no dead letter;
//	                  while eng.Stats().CredentialsErr is set the sender holds
//	                  its jobs (InProgress) and takes no new ones, passing one
//	                  to Send as a probe every CredentialsProbeInterval
//
// Events are published asynchronously with a Nats-Msg-Id of
// "<kind>:<job id>:<stream seq>:<stored>" (or "<kind>:seq:<stream
// seq>:<stored>" for jobs without an id; <stored> is when the jobs stream
// stored the job), so a redelivered job never doubles its event, while a
// job id a producer reuses for a new job (a new stream sequence), or a job
// of a jobs stream made again, still gets its own events; a job is finished only once its events are stored.
// An event not stored for a transient cause (no PubAck in time, no
// responders while the events stream elects a leader, a connection being
// replaced) is published again by the worker, up to 6 times with back-off;
// the job is naked for a retry only if it still is not.
//
// # Shutdown
//
// The order matters: stop intake, let the engine finish, ack or nak every
// outcome, and only then close NATS (acks are messages on the connection).
//
//	w, err := consumer.New(js, opts)
//	eng, err := apns.NewXxx(..., apns.WithOutcomeFunc(w.HandleOutcome))
//	err = w.Run(ctx, eng)    // until ctx is done; then drains the pull buffer into Send
//	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
//	defer cancel()
//	err = errors.Join(err, w.Shutdown(sctx, eng)) // closes eng, waits for every ack/nak/term, flushes
//	stopFeedback()                                // background pollers (they may still publish)
//	err = errors.Join(err, nc.Drain())            // last
//
// Shutdown returns only once every job Run received has been acked, naked or
// terminated (jobs still waiting when sctx ends are naked) and the acks are
// flushed to the server. Call PublishBadTokens before nc.Drain.
package consumer
