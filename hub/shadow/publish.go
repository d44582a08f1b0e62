package shadow

import (
	"context"

	"github.com/edgefleet/edgefleet/ota/wire"
)

// PublishDesired publishes a desired state that was stored by other means
// (registry.UpdateDesiredTx), retained on the device's desired topic; a
// failed publish is retried like SetDesired's.
func (s *Service) PublishDesired(ctx context.Context, ds wire.DesiredState) {
	s.publish(ctx, ds)
}
