// "Use my location": shown only when the browser can tell it, asked only when pressed. The
// position goes into the form's hidden lat/lon fields; the words come from the button's data-*.
(function () {
  "use strict";
  var button = document.getElementById("use-location");
  if (!button || !("geolocation" in navigator)) {
    return;
  }
  var status = document.getElementById("location-status");
  var lat = document.getElementById("lat");
  var lon = document.getElementById("lon");
  button.hidden = false;
  button.addEventListener("click", function () {
    status.textContent = button.dataset.asking;
    navigator.geolocation.getCurrentPosition(
      function (position) {
        lat.value = position.coords.latitude.toFixed(5);
        lon.value = position.coords.longitude.toFixed(5);
        status.textContent = button.dataset.found
          .replace("{lat}", lat.value)
          .replace("{lon}", lon.value);
      },
      function () {
        status.textContent = button.dataset.failed;
      },
      { enableHighAccuracy: false, timeout: 15000, maximumAge: 600000 }
    );
  });
})();
