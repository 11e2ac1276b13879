package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
)

// BadToken is a device token the feedback service reported, with the time
// it became invalid.
type BadToken struct {
	Token apns.Token
	Time  time.Time
}

// PublishBadTokens publishes each token as a BadTokenEvent (source
// "feedback") on <events>.badtokens and waits until all are stored. Each
// carries a Nats-Msg-Id derived from the token and its time, so a token the
// poller reports twice (or two workers both report) is stored once within
// the events stream's duplicates window. It returns the tokens' errors
// joined; publishing the same slice again is safe.
func (w *Worker) PublishBadTokens(ctx context.Context, tokens []BadToken) error {
	futs := make([]jetstream.PubAckFuture, len(tokens))
	var errs []error
	for i, bt := range tokens {
		m, err := eventMsg(w.opts.subject(KindBadToken), feedbackMsgID(bt.Token, bt.Time), BadTokenEvent{
			Token: bt.Token.String(), Time: bt.Time.UTC(), Source: SourceFeedback, Reason: "Feedback",
		})
		if err == nil {
			futs[i], err = w.js.PublishMsgAsync(m)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("consumer: bad token %v: %w", bt.Token, err))
		}
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("consumer: bad token %v: %w", tokens[i].Token, err))
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		}
	}
	if len(errs) > 0 {
		w.m.eventErrors.WithLabelValues(KindBadToken).Add(float64(len(errs)))
	}
	return errors.Join(errs...)
}
