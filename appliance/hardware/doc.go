// Package hardware is the appliance's board support: it tells which board the
// image is running on, drives the activity LED as a status light and watches
// an optional GPIO button for a factory reset.
//
// GPIO goes through periph.io/x/host/v3 and the pin interfaces of
// periph.io/x/conn/v3; periph's host.Init runs only on boards that have such
// pins (the Raspberry Pi kinds), never on x86 or QEMU.
//
// Missing hardware is never an error that stops the appliance: on x86 and
// QEMU, or when the LED or the button's pin does not exist, the constructors
// log one line saying so and return a no-op implementation.
//
// # Status light
//
// The activity LED shows the node's state. Each pattern repeats; times are
// exact (the runner schedules every phase from a timer):
//
//	| State / event               | Pattern                         | One period                                    |
//	|-----------------------------|---------------------------------|-----------------------------------------------|
//	| booting                     | slow even blink (1 Hz)          | 500 ms on, 500 ms off                         |
//	| online-direct               | steady on                       | on, no blinking                               |
//	| online-relayed              | on, short dark blink every 2 s  | 1800 ms on, 200 ms off                        |
//	| error                       | three quick flashes, then pause | 3 x (150 ms on, 150 ms off), then 1100 ms off |
//	| reset button held 3-10 s    | fast blink (5 Hz)               | 100 ms on, 100 ms off                         |
//	| reset triggered (held 10 s) | dark                            | off until release or reboot                   |
//
// A state change takes effect at once: the new pattern starts with its first
// phase at the moment of the change. Setting the state the light already
// shows does not restart its pattern. While the reset button is held its
// feedback overrides the state's pattern; on release the state's pattern
// resumes from its first phase.
//
// The LED is written through the kernel's LED class
// (/sys/class/leds/ACT, or led0 on older kernels), after setting its trigger
// to "none" so the kernel's own SD-card activity trigger stops blinking it.
// periph.io's host/v3/sysfs package has an LED driver too (sysfs.LEDByName),
// but it leaves the trigger alone, so the kernel keeps toggling the LED, and
// it only knows the LEDs it globbed from the fixed /sys path at host.Init;
// writing the class's two files ourselves is simpler and testable.
//
// # Factory reset button
//
// An optional push button between a GPIO pin (for example GPIO17, header
// pin 11) and ground, read active low with the internal pull-up. Holding it
// for 10 s calls the configured callback once (the caller wipes the perm
// partition and reboots; this package only detects). Releasing it earlier
// does nothing. Contact bounce shorter than the debounce time (50 ms) neither
// starts nor ends a press. If the pin already reads pressed when watching
// starts, the button is armed only after it has been seen released, so a
// stuck or miswired pin cannot wipe the device on every boot.
package hardware
