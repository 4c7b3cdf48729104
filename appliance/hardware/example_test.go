package hardware_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/pc2/pc2/appliance/hardware"
)

// How the appliance daemon wires the package: every call works on every
// board, and missing hardware only shows in the log.
func Example() {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	board := hardware.Detect()
	log.Info("board", "model", board.Model, "kind", board.Kind)

	light := hardware.NewLight(hardware.OpenLED(board, hardware.LEDConfig{Logger: log}),
		hardware.LightConfig{Logger: log})
	go light.Run(ctx)

	button := hardware.OpenButton(board, hardware.ButtonConfig{
		Pin:     "GPIO17", // from the device settings; "" = no button
		Light:   light,
		OnReset: func() { /* wipe perm, reboot */ },
		Logger:  log,
	})
	go button.Run(ctx)

	// Later, as the tunnel client learns how the node is reachable:
	light.SetState(hardware.StateOnlineRelayed)
}
