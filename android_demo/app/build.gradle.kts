plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "dev.exporter.demo"
    compileSdk = libs.versions.compileSdk.get().toInt()

    defaultConfig {
        applicationId = "dev.exporter.demo"
        minSdk = libs.versions.minSdk.get().toInt()
        targetSdk = libs.versions.targetSdk.get().toInt()
        versionCode = libs.versions.demoAppCode.get().toInt()
        versionName = libs.versions.demoApp.get()
        // The ExecuTorch AAR ships arm64-v8a and x86_64; phones are arm64, so package only that.
        ndk {
            abiFilters += listOf("arm64-v8a")
        }
        buildConfigField("String", "EXECUTORCH_VERSION", "\"${libs.versions.executorch.get()}\"")
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
            // A demo: sign release builds with the debug key so `installRelease` works out of the box.
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    buildFeatures {
        buildConfig = true
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    androidResources {
        // An embedded model (`exporter bundle --embed-model`) is copied out of the APK once; storing it
        // uncompressed makes that a plain copy and keeps the APK build fast.
        noCompress += listOf("pte", "json", "model")
    }

    packaging {
        jniLibs {
            // Native libraries stay uncompressed and page-aligned in the APK.
            useLegacyPackaging = false
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation(libs.executorch.android)
}
