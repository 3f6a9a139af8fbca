"""The entry points on top of the contract: the `sdpo` command line and the process
supervisor of `sdpo serve` (the embedded Redis, the gateway and the workers). The contract
package `sdpo` imports nothing from here."""
